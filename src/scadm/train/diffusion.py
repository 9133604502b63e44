"""`scadm train`: the SCA-DM denoiser and style encoder, trained jointly with the loss of Eq. 2.

Per sample: z_0 = encoder latent of the image (pre-quantisation, frozen first stage), t ~ U{0..T-1},
eps ~ N(0, I), z_t = q_sample(z_0, t, eps) (Eq. 3); the style context is E_s(x', M) where x' is the
image, or zeros for a random `style_dropout` share of the batch (paper Sec. 4, training details: 50 %;
the authors zero the style encoder's image only, never the mask); loss = mean squared error between
eps and unet(z_t, t, context, M), or between v and it with train.prediction_type "v_prediction"
(scadm.schedule.PREDICTION_TYPES). AdamW runs over the UNet and the style encoder; only the UNet has
an EMA (the authors' LitEma rule). With train.cache_latents each image's z_0 is computed once.

Launching (the same command everywhere; accelerate picks the device):

    one CPU or one GPU:
        scadm train CONFIG --out runs/demo --vq runs/demo-vq
    several GPUs on one machine (data.batch_size is per GPU; the lr is used as given, so scale
    it yourself if the effective batch grows: the authors' rule is base x batch x accum x GPUs):
        accelerate launch --multi_gpu --num_processes 4 -m scadm.cli train CONFIG --out DIR --vq VQ
    a cluster (every machine sees the same DIR, e.g. on a shared file system):
        accelerate launch --num_machines 2 --machine_rank $RANK --main_process_ip $HOST \\
            --main_process_port 29500 --num_processes 16 -m scadm.cli train CONFIG --out DIR --vq VQ
    (or answer `accelerate config` once per machine and run `accelerate launch -m scadm.cli train ...`).
A run is resumed with the same command plus `--resume auto`; on SLURM, requeue with it.

Under DDP, find_unused_parameters is on: with one-hot masks the masked cross-attention uses only
to_v/to_out, so attn2.to_q/to_k and norm2 get no gradient (they stay in the weights for the authors'
checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models import VQModel
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from scadm.errors import CheckpointError, InputError
from scadm.figures import save_grid
from scadm.labels import LabelSet, one_hot
from scadm.models.autoencoder import downsampling_factor, encode, set_scale_by_std
from scadm.pipeline import SCADMPipeline
from scadm.schedule import NoiseSchedule
from scadm.train.autoencoder import FIRST_STAGE, load_first_stage, psnr
from scadm.train.checkpoint import replace_folder
from scadm.train.config import Config, build_style_encoder, build_unet, check_resume_config, load_config, save_config
from scadm.train.data import BatchStream, CachedDataset, build_datasets, holdout_batch, loader_workers
from scadm.train.loop import Task, TrainResult, fit, make_accelerator, record_init, resolve_resume

PIPELINE, PIPELINE_RAW = "pipeline", "pipeline-raw"
SAMPLES = "samples"
SAMPLE_SEED = 0
SCALE_BY_STD_IMAGES = 64  # the first training images (LDM uses its first batch)


def drop_style_images(image: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """The style encoder's input: rows where `drop` (B,) is True become all-zero images."""
    return torch.where(drop[:, None, None, None], torch.zeros_like(image), image)


def diffusion_loss(
    unet,
    style_encoder,
    schedule: NoiseSchedule,
    z0: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    style_dropout: float,
) -> torch.Tensor:
    """Eq. 2 for one batch: latent z0 (B,c,h,w) of image (B,3,H,W) in [-1,1], one-hot mask (B,C,H,W).

    t, eps and the dropped rows are drawn from `generator` (CPU) in that order, so a step's
    randomness is a function of the generator's seed alone.
    """
    b = z0.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=generator).to(z0.device)
    noise = torch.randn(z0.shape, generator=generator).to(z0.device)
    drop = (torch.rand(b, generator=generator) < style_dropout).to(z0.device)
    context = style_encoder(drop_style_images(image, drop), mask)  # (B, C, L*D)
    # the mask is one-hot: saying so skips a check that would break a compiled graph
    output = unet(schedule.q_sample(z0, t, noise), t, context, mask, hard=True)
    target = schedule.target(z0, t, noise)  # eps (the paper's), or v
    return F.mse_loss(output.float(), target)  # mean over C,H,W and batch, as the authors average


class LatentCache:
    """z0 of every training item, encoded alone (a batch of one) when first drawn, or all at once in
    fixed chunks of the dataset's order (`fill`): either way a cached value never depends on the
    batch it arrived in, so an interrupted and resumed run sees the same latents as an
    uninterrupted one. Only for datasets whose items never change (no flips)."""

    FILL_CHUNK = 256

    def __init__(self, vqvae: VQModel):
        self.vqvae = vqvae
        self.latents: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, keys: list, image: torch.Tensor) -> torch.Tensor:
        for i, key in enumerate(keys):
            if key not in self.latents:
                self.latents[key] = encode(self.vqvae, image[i : i + 1]).float()
        return torch.cat([self.latents[key] for key in keys])

    @torch.no_grad()
    def fill(self, dataset, device: torch.device, progress: bool = True) -> None:
        """Encode every item of `dataset` (in memory already: one batch per launch, not one
        image, which on a GPU is the difference between seconds and minutes)."""
        for begin in tqdm(range(0, len(dataset), self.FILL_CHUNK), desc="encoding latents", disable=not progress):
            batch = default_collate([dataset[i] for i in range(begin, min(begin + self.FILL_CHUNK, len(dataset)))])
            latents = encode(self.vqvae, batch["image"].to(device)).float()
            for key, z in zip(_item_keys(batch), latents, strict=True):
                self.latents[key] = z[None]


class UNetEMA:
    """The authors' LitEma: after the n-th update (n = 1, 2, ...), with d = min(decay, (1+n)/(10+n)),
    shadow <- shadow - (1 - d)(shadow - param); shadows start as the initial weights.

    Not diffusers' EMAModel: with use_ema_warmup=False it uses (1+m)/(10+m) with m = n - 1 and
    d = 0 at n = 1 (the shadow jumps to the weights), one update behind LitEma throughout.
    One difference from the authors remains: Lightning calls their update after every batch, so
    with gradient accumulation k they update k times per optimizer step; this runs once per step.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.num_updates = decay, 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        params = dict(model.named_parameters())
        shadows = list(self.shadow.values())
        torch._foreach_sub_(
            shadows, torch._foreach_sub(shadows, [params[n] for n in self.shadow]), alpha=1.0 - self.current_decay()
        )

    def state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """`model`'s state dict with the shadows in place of its parameters."""
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}


class DiffusionTask(Task):
    name, export_name = "diffusion", PIPELINE

    def __init__(
        self,
        accelerator,
        config: Config,
        unet,
        style_encoder,
        vqvae: VQModel,
        label_set: LabelSet,
        holdout: tuple[torch.Tensor, torch.Tensor],
        out: Path,
    ):
        self.accelerator, self.config, self.cfg, self.out = accelerator, config, config.train, Path(out)
        self.unet, self.style_encoder, self.vqvae = unet, style_encoder, vqvae
        self.models = {"unet": unet, "style_encoder": style_encoder}
        self.label_set, self.holdout, self.schedule = (
            label_set,
            holdout,
            NoiseSchedule(prediction_type=self.cfg.prediction_type),
        )
        self.latent_cache = LatentCache(vqvae) if self.cfg.cache_latents else None
        decay = self.cfg.ema_decay
        self.ema = UNetEMA(accelerator.unwrap_model(unet), decay) if decay is not None else None

    def loss(self, batch, generator):
        device = self.accelerator.device
        image = batch["image"].to(device, non_blocking=True)
        mask = one_hot(batch["labels"].to(device, non_blocking=True), self.label_set.num_classes)
        if self.latent_cache is not None:
            z0 = self.latent_cache(_item_keys(batch), image)
        else:
            with torch.no_grad():
                z0 = encode(self.vqvae, image).float()  # (B, 3, H/f, W/f), not quantised (LDM)
        loss = diffusion_loss(
            self.unet, self.style_encoder, self.schedule, z0, image, mask, generator, self.cfg.style_dropout
        )
        return loss, {}

    def after_step(self):
        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(self.unet))

    def extra_tensors(self):
        return {} if self.ema is None else {"ema_unet": self.ema.shadow}

    def extra_state(self):
        return {"ema_updates": 0 if self.ema is None else self.ema.num_updates}

    def load_extra(self, tensors, state):
        if self.ema is None:
            return
        if "ema_unet" not in tensors:
            raise CheckpointError("the checkpoint has no EMA weights but train.ema_decay is set")
        for name, shadow in self.ema.shadow.items():
            shadow.copy_(tensors["ema_unet"][name])
        self.ema.num_updates = int(state["ema_updates"])

    def pipeline(self, ema: bool = True) -> SCADMPipeline:
        """A fresh pipeline from the current weights (EMA UNet when `ema` and there is one)."""
        device = self.accelerator.device
        unet = self.accelerator.unwrap_model(self.unet)
        unet_copy = type(unet).from_config(unet.config).to(device)
        unet_copy.load_state_dict(self.ema.state_dict(unet) if ema and self.ema is not None else unet.state_dict())
        style = self.accelerator.unwrap_model(self.style_encoder)
        style_copy = type(style).from_config(style.config).to(device)
        style_copy.load_state_dict(style.state_dict())
        return SCADMPipeline(
            unet_copy,
            style_copy,
            self.vqvae,
            self.schedule,
            self.label_set,
            image_size=self.config.data.size,
            unconditional=self.cfg.unconditional,
        )

    def export(self):
        replace_folder(self.out / PIPELINE, self.pipeline(ema=True).save_pretrained)
        if self.cfg.export_raw and self.ema is not None:
            replace_folder(self.out / PIPELINE_RAW, self.pipeline(ema=False).save_pretrained)

    def evaluate(self, step):
        """Held-out masks rendered with their own style (reconstruction) and a random style."""
        pipe = self.pipeline(ema=True)
        images, labels = self.holdout
        kwargs = dict(
            num_inference_steps=self.cfg.sample_steps, guidance_scale=self.cfg.sample_guidance, seed=SAMPLE_SEED
        )
        recon = pipe(labels, pipe.encode_style(images, labels), **kwargs).cpu()
        random = pipe(labels, pipe.blank_style(labels), **kwargs).cpu()
        save_grid(
            [list(images), list(labels), list(recon), list(random)],
            self.out / SAMPLES / f"step_{step:07d}.png",
            row_labels=["source", "mask", "own style", "random style"],
            title=f"step {step}: {'EMA' if self.ema else 'raw'} UNet, DDIM {self.cfg.sample_steps}, "
            f"g={self.cfg.sample_guidance:g}",
            label_set=self.label_set,
        )
        return {"eval/reconstruction_psnr": psnr(recon, images)}


def train_diffusion(
    config: Config | str | Path,
    out: str | Path,
    vq: str | Path | None = None,
    max_steps: int | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    cpu: bool = False,
    max_minutes: float | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train SCA-DM as `config` says into the run folder `out` (see the module docstring).

    `vq`: the frozen first stage (run folder of `train_vq`, pipeline or VQModel folder); on resume
    it defaults to the run's own copy. `resume`: None (fresh run), "auto" or a checkpoint folder.
    `max_steps` overrides train.max_steps; `cpu` forces the CPU even where a GPU is present;
    `max_minutes`: see `fit`. `init`: a pipeline folder whose UNet and style encoder a fresh run
    starts from (fine-tuning; the optimizer and EMA start afresh); ignored on resume.
    """
    config = config if isinstance(config, Config) else load_config(config)
    cfg, out = config.train, Path(out)
    accelerator = make_accelerator(cfg, out, cpu=cpu, find_unused_parameters=True)
    start = resolve_resume(out, resume)
    if start is not None:
        check_resume_config(config, out, ("data", "model", "train"))
    if vq is None:
        if start is None:
            raise InputError(
                "--vq: a fresh run needs a first stage (a `scadm train-vq` run folder or a "
                "pipeline folder from `scadm convert`)"
            )
        vq = out / FIRST_STAGE
    vqvae = load_first_stage(vq)
    train_set, holdout, label_set = build_datasets(config.data)
    torch.manual_seed(cfg.seed)
    unet, style_encoder = build_unet(config), build_style_encoder(config)
    _check_compatible(config, unet, vqvae, label_set, vq)
    if init is not None and start is None:
        _init_from_pipeline(unet, style_encoder, Path(init))

    optimizer = torch.optim.AdamW(
        list(unet.parameters()) + list(style_encoder.parameters()),
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
    )
    unet, style_encoder, optimizer = accelerator.prepare(unet, style_encoder, optimizer)
    vqvae.to(accelerator.device).eval().requires_grad_(False)
    if start is None and cfg.scale_by_std:  # every rank computes the same value from the same images
        set_scale_by_std(vqvae, holdout_batch(train_set, SCALE_BY_STD_IMAGES)[0])
    if accelerator.is_main_process and start is None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        replace_folder(out / FIRST_STAGE, vqvae.save_pretrained)
        (out / FIRST_STAGE / "source.json").write_text(json.dumps({"vq": str(vq)}) + "\n")
        if init is not None:
            record_init(out, init)
    accelerator.wait_for_everyone()

    stream = BatchStream(
        train_set,
        cfg.batch_size or config.data.batch_size,
        cfg.seed,
        loader_workers(config.data),
        accelerator.process_index,
        accelerator.num_processes,
    )
    task = DiffusionTask(
        accelerator, config, unet, style_encoder, vqvae, label_set, holdout_batch(holdout, config.data.holdout_num), out
    )
    if task.latent_cache is not None and isinstance(train_set, CachedDataset) and train_set.filled:
        task.latent_cache.fill(train_set, accelerator.device, progress and accelerator.is_local_main_process)
    return fit(accelerator, task, optimizer, cfg, stream, out, max_steps or cfg.max_steps, start, progress, max_minutes)


def _item_keys(batch: dict) -> list:
    """Which dataset items a batch holds (SyntheticFaces give "index", FaceFolder "name")."""
    keys = batch.get("index", batch.get("name"))
    if keys is None:
        raise InputError("train.cache_latents: the dataset's items carry neither 'index' nor 'name'")
    return keys.tolist() if torch.is_tensor(keys) else list(keys)


def _init_from_pipeline(unet, style_encoder, folder: Path) -> None:
    pipe = SCADMPipeline.from_pretrained(folder)
    for name, model, source in (("unet", unet, pipe.unet), ("style_encoder", style_encoder, pipe.style_encoder)):
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise CheckpointError(f"--init {folder}: its {name} does not match the config ({first})") from None
    order = pipe.style_encoder.config.class_order
    if order != style_encoder.config.class_order:  # same weights, other classes: a silent mix-up
        raise CheckpointError(
            f"--init {folder}: its style encoder reads the classes in the order {order} "
            f"(style_encoder/config.json); set model.style_encoder.class_order to it"
        )


def _check_compatible(config: Config, unet, vqvae: VQModel, label_set: LabelSet, source) -> None:
    if vqvae.config["latent_channels"] != unet.config.in_channels:
        raise InputError(
            f"--vq {source}: latent_channels {vqvae.config['latent_channels']} != "
            f"model.unet.in_channels {unet.config.in_channels}"
        )
    f = downsampling_factor(vqvae) * 2 ** (len(unet.config.channel_mult) - 1)
    if config.data.size % f:
        raise InputError(f"--vq {source}: data.size {config.data.size} is not a multiple of {f}")
    if label_set.num_classes != unet.config.num_classes:
        raise InputError(
            f"the data has {label_set.num_classes} classes, model.unet.num_classes is {unet.config.num_classes}"
        )
