"""`scadm train-vq`: the VQ-f4 first stage (diffusers' VQModel, built by `vq_f4`).

Loss = l1_weight * |x - x_rec| + mse_weight * (x - x_rec)^2 (both means over pixels) +
codebook_weight * commit_loss, where x_rec is decoded from the *quantised* latent (straight-through,
as LDM trains it) and commit_loss is what VQModel's quantiser returns: in its legacy form (taming's
default, beta = 0.25) mean((sg[z_q] - z)^2) + 0.25 * mean((z_q - sg[z])^2), i.e. commitment weight 1
and codebook weight 0.25.

Left out of LDM's recipe (VQLPIPSWithDiscriminator): the LPIPS perceptual term (its VGG weights are
a download this package does not make) and the patch-GAN discriminator (too slow for a CPU budget).
Both sharpen textures; PSNR does not need them, and the L2 term is added for PSNR instead. For the
paper's 256 px model, convert LDM's vq-f4 (`scadm convert --vq-ckpt`) rather than training one.
Added: the codebook starts as encoder outputs of training images (`init_codebook`), not near 0.

The held-out PSNR (quantised reconstruction, images in [0, 1]) is logged every sample_every steps
with a grid of originals and reconstructions; the model is written in diffusers format to
DIR/vqvae with every checkpoint. Launching works as for `scadm train` (see scadm.train.diffusion).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models import VQModel

from scadm.errors import CheckpointError, InputError
from scadm.figures import save_grid
from scadm.models.autoencoder import decode, encode
from scadm.models.loading import load_network
from scadm.train.checkpoint import replace_folder
from scadm.train.config import Config, build_vqvae, check_resume_config, load_config, save_config
from scadm.train.data import BatchStream, build_datasets, holdout_batch, loader_workers
from scadm.train.loop import Task, TrainResult, fit, make_accelerator, record_init, resolve_resume

FIRST_STAGE = "vqvae"  # a first stage's folder in run and pipeline folders
SAMPLES = "samples"
CODEBOOK_INIT_IMAGES = 32  # the first training images, whose latents seed the codebook


def load_first_stage(path: str | Path, option: str = "--vq") -> VQModel:
    """A VQ first stage from a `scadm train-vq` run folder, a pipeline folder or a VQModel folder."""
    path = Path(path)
    for folder in (path / FIRST_STAGE, path):
        if (folder / "config.json").is_file():
            return load_network(VQModel, folder, "VQ first stage")
    raise InputError(
        f"{option} {path}: no VQ model here (expected a `scadm train-vq` run folder, a "
        "pipeline folder with vqvae/, or a folder with a VQModel config.json)"
    )


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-image PSNR in dB of (B,3,H,W) images in [-1, 1], measured on [0, 1]."""
    a = (images.float().clamp(-1, 1) + 1) / 2
    b = (reference.float().to(a.device).clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean().item()


def vq_loss(
    vqvae: VQModel, image: torch.Tensor, l1_weight: float, mse_weight: float, codebook_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted loss, its unweighted terms) for a batch of images in [-1, 1]."""
    out = vqvae(image)  # quantised decode; out.commit_loss: codebook + commitment (legacy weights)
    rec = out.sample.float()
    terms = {"l1": (rec - image).abs().mean(), "mse": F.mse_loss(rec, image), "commit": out.commit_loss.float().mean()}
    loss = l1_weight * terms["l1"] + mse_weight * terms["mse"] + codebook_weight * terms["commit"]
    return loss, {k: v.detach() for k, v in terms.items()}


@torch.no_grad()
def init_codebook(vqvae: VQModel, images: torch.Tensor, generator: torch.Generator) -> None:
    """Codebook entries := randomly chosen encoder outputs of `images` (B,3,H,W).

    VQModel's default init, uniform in +-1/n, puts every code near 0, far from the encoder's
    outputs: the decoder then sees almost the same vector everywhere and few codes are ever used.
    Drawing the codes from the latents of real images avoids that slow start.
    """
    latents = encode(vqvae, images).permute(0, 2, 3, 1).flatten(0, 2)  # (B*h*w, d)
    codebook = vqvae.quantize.embedding.weight
    pick = torch.randperm(latents.shape[0], generator=generator)[: codebook.shape[0]]
    if pick.numel() < codebook.shape[0]:
        pick = pick[torch.arange(codebook.shape[0]) % pick.numel()]
    codebook.copy_(latents[pick.to(latents.device)])


class VQTask(Task):
    name, export_name = "vq", FIRST_STAGE

    def __init__(self, accelerator, config: Config, vqvae, holdout: tuple[torch.Tensor, torch.Tensor], out: Path):
        self.accelerator, self.cfg, self.out = accelerator, config.train_vq, Path(out)
        self.vqvae, self.holdout = vqvae, holdout
        self.models = {"vqvae": vqvae}

    def loss(self, batch, generator):
        image = batch["image"].to(self.accelerator.device, non_blocking=True)
        return vq_loss(self.vqvae, image, self.cfg.l1_weight, self.cfg.mse_weight, self.cfg.codebook_weight)

    @torch.no_grad()
    def evaluate(self, step):
        vqvae = self.accelerator.unwrap_model(self.vqvae)
        images = self.holdout[0].to(self.accelerator.device)
        latent = encode(vqvae, images)
        recon = decode(vqvae, latent).float()
        _, _, (_, _, codes) = vqvae.quantize(latent)
        save_grid(
            [list(images.cpu()), list(recon.clamp(-1, 1).cpu())],
            self.out / SAMPLES / f"vq_step_{step:07d}.png",
            row_labels=["held out", "reconstructed"],
            title=f"step {step}",
        )
        return {"eval/psnr": psnr(recon, images), "eval/codes_used": float(codes.unique().numel())}

    def export(self):
        replace_folder(self.out / FIRST_STAGE, self.accelerator.unwrap_model(self.vqvae).save_pretrained)


def train_vq(
    config: Config | str | Path,
    out: str | Path,
    max_steps: int | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    cpu: bool = False,
    max_minutes: float | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train the VQ first stage as `config.train_vq` says into the run folder `out`.

    `resume`: None (fresh run), "auto" or a checkpoint folder; `max_steps` overrides
    train_vq.max_steps; `cpu` forces the CPU even where a GPU is present; `max_minutes`: see `fit`.
    `init`: a first stage (as `load_first_stage` finds it) whose weights and codebook a fresh run
    starts from (fine-tuning, e.g. on another domain; the optimizer starts afresh); ignored on resume.
    """
    config = config if isinstance(config, Config) else load_config(config)
    cfg, out = config.train_vq, Path(out)
    accelerator = make_accelerator(cfg, out, cpu=cpu)
    start = resolve_resume(out, resume)
    if start is not None:
        check_resume_config(config, out, ("data", "model.vqvae", "train_vq"))
    train_set, holdout, _ = build_datasets(config.data)
    torch.manual_seed(cfg.seed)
    vqvae = build_vqvae(config)
    if init is not None and start is None:
        _init_from_first_stage(vqvae, Path(init))
    elif cfg.init_codebook_from_data and start is None:  # a resumed run loads its codebook
        images = holdout_batch(train_set, CODEBOOK_INIT_IMAGES)[0]
        init_codebook(vqvae, images, torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.AdamW(vqvae.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    vqvae, optimizer = accelerator.prepare(vqvae, optimizer)
    if accelerator.is_main_process and start is None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        if init is not None:
            record_init(out, init)
    stream = BatchStream(
        train_set,
        cfg.batch_size or config.data.batch_size,
        cfg.seed,
        loader_workers(config.data),
        accelerator.process_index,
        accelerator.num_processes,
    )
    task = VQTask(accelerator, config, vqvae, holdout_batch(holdout, config.data.holdout_num), out)
    return fit(accelerator, task, optimizer, cfg, stream, out, max_steps or cfg.max_steps, start, progress, max_minutes)


def _init_from_first_stage(vqvae: VQModel, folder: Path) -> None:
    source = load_first_stage(folder, "--init")
    try:
        vqvae.load_state_dict(source.state_dict())
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"--init {folder}: its first stage does not match model.vqvae ({first})") from None
