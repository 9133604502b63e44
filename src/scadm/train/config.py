"""Training configuration: plain dataclasses read from one YAML file (see configs/).

    data:      what to train on (procedural faces or an image/label folder), batch size, workers
    model:     constructor arguments of SCADMUNet, StyleEncoder and `vq_f4` (the VQ-f4 first stage)
    train:     the diffusion model's optimisation (`scadm train`, paper Eq. 2)
    train_vq:  the first stage's optimisation (`scadm train-vq`)

Every key is checked: an unknown one is an InputError naming the key and the file, so a typo never
silently trains with a default. Relative paths in the file are relative to the working directory.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from diffusers.models import VQModel

from scadm.errors import InputError
from scadm.models.autoencoder import VQ_F4_CONFIG, vq_f4
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.pipeline import UNCONDITIONAL_INPUTS
from scadm.schedule import PREDICTION_TYPES
from scadm.train.dataclass_yaml import build_dataclass

DATA_KINDS = ("synthetic", "folder")
MIXED_PRECISION = ("no", "bf16", "fp16")
# Keys that only one data kind reads; giving one for the other kind is refused.
KIND_KEYS = {
    "synthetic": {"num", "seed", "holdout_seed", "cache"},
    "folder": {"root", "split", "holdout_split", "flip", "labels", "limit"},
}


@dataclass
class DataConfig:
    kind: str = "synthetic"
    size: int = 64  # image side in pixels
    batch_size: int = 32  # per process and per micro-batch
    num_workers: int = 0
    holdout_num: int = 8  # held-out images for PSNR and the sample grids
    # kind "synthetic": SyntheticFaces(num, size, seed); held-out faces use holdout_seed.
    num: int = 10_000
    seed: int = 0
    holdout_seed: int = 1
    cache: bool = True  # keep rendered faces in memory after their first use
    # kind "folder": FaceFolder(root, size, split=split, flip=flip); `labels` is a class YAML.
    root: str | None = None
    split: str | None = "train"
    holdout_split: str | None = "test"
    flip: bool = False
    labels: str | None = None  # None: CelebAMask-HQ's 19 classes
    limit: int | None = None  # train on the first `limit` pairs only (see FaceFolder's `limit`)


@dataclass
class ModelConfig:
    """Keyword arguments of the three constructors; omitted ones take the paper's defaults."""

    unet: dict = field(default_factory=dict)
    style_encoder: dict = field(default_factory=dict)
    vqvae: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01  # torch AdamW's default, which the authors use
    grad_accum: int = 1
    max_steps: int = 1000  # optimizer steps
    warmup_steps: int = 0  # linear lr warm-up (the authors use none)
    max_grad_norm: float | None = None  # None: no clipping (the authors clip nothing)
    mixed_precision: str = "no"
    batch_size: int | None = None  # None: data.batch_size
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000  # held-out evaluation (sample grid, PSNR)
    log_every: int = 50
    seed: int = 0


@dataclass
class DiffusionTrainConfig(OptimConfig):
    ema_decay: float | None = 0.9999  # None: no EMA
    style_dropout: float = 0.5  # share of style-encoder input images zeroed (paper Sec. 4: 50 %)
    unconditional: str = "blank"  # recorded in the pipeline: see scadm.pipeline
    prediction_type: str = "epsilon"  # or "v_prediction" (scadm.schedule.PREDICTION_TYPES)
    sample_steps: int = 25  # DDIM steps of the sample grids
    sample_guidance: float = 1.0
    export_raw: bool = False  # also write the non-EMA UNet as DIR/pipeline-raw
    cache_latents: bool = False  # keep each image's first-stage latent (needs data without flips)
    scale_by_std: bool = False  # fresh run: set the first stage's scaling_factor to 1/std (LDM)


@dataclass
class VQTrainConfig(OptimConfig):
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    codebook_weight: float = 1.0  # weight of VQModel's commit_loss (commitment + 0.25 codebook)
    init_codebook_from_data: bool = True  # codes drawn from encoder outputs (see init_codebook)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    train_vq: VQTrainConfig = field(default_factory=VQTrainConfig)

    def to_dict(self) -> dict:
        """Plain values, without the keys the other data kind reads: what `load_config` accepts."""
        raw = _plain(asdict(self))
        raw["data"] = _own_kind_keys(raw["data"])
        return raw


def _own_kind_keys(data: dict) -> dict:
    """A data section without the keys that only another data kind reads (KIND_KEYS)."""
    kind = data.get("kind", DataConfig.kind)
    stray = set().union(*(keys for other, keys in KIND_KEYS.items() if other != kind))
    return {k: v for k, v in data.items() if k not in stray}


def _plain(value):
    """Tuples to lists, recursively, so yaml.safe_dump writes plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- reading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and check a training YAML; raise InputError naming the file and the bad key.

    `overrides` are "dotted.key=value" strings (value in YAML syntax) applied on top of the file,
    e.g. "model.unet.mask_attention=false": a variant of a recipe without a second file.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    raw = raw or {}
    for override in overrides:
        _apply_override(raw, override)
    source = str(path) + "".join(f" --set {o}" for o in overrides)
    return config_from_dict(raw, source)


def _apply_override(raw: dict, override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {override}: expected KEY=VALUE, e.g. model.unet.mask_attention=false")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {override}: the value is not valid YAML") from None
    *parents, leaf = key.strip().split(".")
    node = raw
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {override}: '{name}' is not a section")
        node = child
    node[leaf] = parsed


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    config = build_dataclass(Config, raw, "", source)
    data_raw = raw.get("data") or {}
    for kind, keys in KIND_KEYS.items():
        stray = sorted(keys & set(data_raw)) if config.data.kind != kind else []
        if stray:
            raise InputError(f"{source}: data.{stray[0]} is only read for data.kind '{kind}'")
    check_config(config, source)
    return config


# ---------------------------------------------------------------- checking


def _constructor_args(fn, given: dict, what: str, source: str) -> dict:
    """`given` merged over `fn`'s defaults; unknown keys are refused."""
    params = {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if k != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    for key in given:
        if key not in params:
            raise InputError(f"{source}: unknown key 'model.{what}.{key}' (allowed: {', '.join(sorted(params))})")
    return {**params, **given}


def check_config(config: Config, source: str = "<config>") -> None:
    """Refuse settings that cannot train, naming the key; checks the three models agree."""
    d, m = config.data, config.model

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"{source}: {message}")

    need(d.kind in DATA_KINDS, f"data.kind must be one of {DATA_KINDS}, got {d.kind!r}")
    need(d.kind != "folder" or bool(d.root), "data.root is required for data.kind 'folder'")
    need(d.limit is None or d.limit >= 1, f"data.limit must be >= 1 (or null), got {d.limit}")
    for name in ("size", "batch_size", "holdout_num"):
        need(getattr(d, name) >= 1, f"data.{name} must be >= 1, got {getattr(d, name)}")
    need(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    need(
        d.kind != "synthetic" or d.holdout_seed != d.seed,
        "data.holdout_seed must differ from data.seed, or the held-out faces are training faces",
    )
    for section in ("train", "train_vq"):
        t = getattr(config, section)
        need(t.lr > 0, f"{section}.lr must be > 0, got {t.lr}")
        need(
            t.mixed_precision in MIXED_PRECISION,
            f"{section}.mixed_precision must be one of {MIXED_PRECISION}, got {t.mixed_precision!r}",
        )
        for name in ("grad_accum", "max_steps", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
            need(getattr(t, name) >= 1, f"{section}.{name} must be >= 1, got {getattr(t, name)}")
        need(t.batch_size is None or t.batch_size >= 1, f"{section}.batch_size must be >= 1 or null")
        need(t.warmup_steps >= 0 and t.seed >= 0, f"{section}.warmup_steps and seed must be >= 0")
    t = config.train
    need(
        not (t.cache_latents and d.kind == "folder" and d.flip),
        "train.cache_latents needs data.flip false (a flipped image has another latent)",
    )
    need(0.0 <= t.style_dropout <= 1.0, f"train.style_dropout must be in [0, 1], got {t.style_dropout}")
    need(t.ema_decay is None or 0.0 < t.ema_decay < 1.0, "train.ema_decay must be in (0, 1) or null")
    need(
        t.unconditional in UNCONDITIONAL_INPUTS,
        f"train.unconditional must be one of {UNCONDITIONAL_INPUTS}, got {t.unconditional!r}",
    )
    need(
        t.prediction_type in PREDICTION_TYPES,
        f"train.prediction_type must be one of {PREDICTION_TYPES}, got {t.prediction_type!r}",
    )

    unet = _constructor_args(SCADMUNet.__init__, m.unet, "unet", source)
    style = _constructor_args(StyleEncoder.__init__, m.style_encoder, "style_encoder", source)
    vq = {**VQ_F4_CONFIG, **m.vqvae}
    _constructor_args(VQModel.__init__, m.vqvae, "vqvae", source)
    need(
        unet["num_classes"] == style["num_classes"],
        f"model.unet.num_classes ({unet['num_classes']}) != model.style_encoder.num_classes ({style['num_classes']})",
    )
    context = style["num_upsample"] * style["style_dim"]
    need(
        unet["context_dim"] == context,
        f"model.unet.context_dim must be num_upsample * style_dim = {context}, got {unet['context_dim']}",
    )
    need(
        unet["in_channels"] == unet["out_channels"] == vq["latent_channels"],
        f"model.unet.in_channels/out_channels must equal model.vqvae.latent_channels ({vq['latent_channels']})",
    )
    f = 2 ** (len(vq["block_out_channels"]) - 1) * 2 ** (len(unet["channel_mult"]) - 1)
    need(d.size % f == 0, f"data.size {d.size} must be a multiple of {f} (VQ and UNet downsampling)")
    need(
        d.size % 2 ** style["num_downsample"] == 0,
        f"data.size {d.size} must be a multiple of 2**model.style_encoder.num_downsample",
    )


# ---------------------------------------------------------------- building


def build_unet(config: Config) -> SCADMUNet:
    return SCADMUNet(**config.model.unet)


def build_style_encoder(config: Config) -> StyleEncoder:
    return StyleEncoder(**config.model.style_encoder)


def build_vqvae(config: Config):
    return vq_f4(**{"sample_size": config.data.size, **config.model.vqvae})


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


# Settings a resumed run may change: when it stops, how often it reports, how faces are rendered.
RESUMABLE_KEYS = {"data.num_workers", "train.max_steps", "train_vq.max_steps"} | {
    f"{section}.{key}"
    for section in ("train", "train_vq")
    for key in ("checkpoint_every", "keep_checkpoints", "sample_every", "log_every")
}


def check_resume_config(config: Config, run: Path, sections: tuple[str, ...]) -> None:
    """Refuse to resume the run in `run` with settings that change what it trains (data, model,
    optimiser, objective...): the result would be neither run. Only keys under `sections` (the
    trainer's, e.g. ("data", "model.vqvae", "train_vq")) are compared; names the keys that differ."""
    saved_path = Path(run) / "config.yaml"
    if not saved_path.is_file():
        return
    raw = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    raw["data"] = _own_kind_keys(raw.get("data") or {})  # older runs saved every kind's keys
    saved, given = _flatten(config_from_dict(raw, str(saved_path)).to_dict()), _flatten(config.to_dict())
    changed = sorted(
        k
        for k in saved.keys() | given.keys()
        if saved.get(k) != given.get(k)
        and k not in RESUMABLE_KEYS
        and k.startswith(tuple(f"{section}." for section in sections))
    )
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {given.get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise InputError(
            f"--resume: the config differs from the run's {saved_path} ({shown}{more}); "
            f"resume with that file (or the same --set options) as CONFIG"
        )


def _flatten(raw: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
