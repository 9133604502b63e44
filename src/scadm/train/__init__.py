"""Training: the VQ first stage (`train_vq`) and the SCA-DM denoiser with its style encoder
(`train_diffusion`), configured by one YAML file (`load_config`, see configs/), resumable exactly
from atomic checkpoints, and launchable on one CPU up to a multi-node cluster through accelerate."""

from scadm.train.autoencoder import train_vq
from scadm.train.config import Config, load_config
from scadm.train.diffusion import train_diffusion
from scadm.train.loop import TrainResult

__all__ = ["Config", "TrainResult", "load_config", "train_diffusion", "train_vq"]
