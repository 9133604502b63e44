"""One-way import of the authors' checkpoints into a scadm pipeline folder.

Reads the authors' YAML config as they ship it (`scadm.authors_config`) and their Lightning checkpoint
(`model.diffusion_model.*`, `model_ema.*`, `cond_stage_model.*`, `first_stage_model.*`), and/or
CompVis's vq-f4 `model.ckpt`. Nothing pickled is executed: checkpoints are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from .authors_config import read_authors_config
from .errors import CheckpointError, InputError
from .models.autoencoder import vq_f4
from .models.loading import check_finite, unreadable_checkpoint, unreadable_safetensors
from .models.style_encoder import StyleEncoder
from .models.unet import SCADMUNet
from .schedule import NoiseSchedule

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
STYLE_PREFIX = "cond_stage_model."
VQ_PREFIX = "first_stage_model."
#: in every authors' checkpoint but never used by their forward pass
DEAD_UNET_KEYS = ("label_emb.weight",)

# ---------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A Lightning/LDM `.ckpt` or a `.safetensors` file -> flat state dict, no pickled code run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types
            raise unreadable_safetensors(path, err) from None
    try:
        obj = _torch_load(path)
    except Exception as err:
        obj = _load_with_lightning_stubs(path, err)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors")
    return state


def _torch_load(path: Path):
    with warnings.catch_warnings():  # a pickle protocol the reader may not know: its errors say more
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


#: Training-state classes that Lightning pickles into checkpoints (e.g. PL 1.4 keys `callbacks` by the
#: callback class). They are replaced by empty stand-ins: referenced, never imported or run.
STUBBABLE_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")


def _stub(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (), {"__module__": module, "__qualname__": name})


def _load_with_lightning_stubs(path: Path, err: Exception) -> dict:
    """Retry a weights-only load with stand-ins for Lightning's own classes; refuse anything else."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        unsafe = []
    if unsafe and all(name.startswith(STUBBABLE_MODULES) for name in unsafe):
        with torch.serialization.safe_globals([_stub(name) for name in unsafe]):
            try:
                return _torch_load(path)
            except Exception as retry_err:
                err = retry_err
    raise unreadable_checkpoint(path, err, unsafe) from None


def _strip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _ema_unet(state: dict, unet_keys) -> dict[str, torch.Tensor]:
    """LitEma stores `diffusion_model.<param>` with the dots removed."""
    ema = _strip(state, EMA_PREFIX)
    return {
        k: ema[("diffusion_model." + k).replace(".", "")]
        for k in unet_keys
        if ("diffusion_model." + k).replace(".", "") in ema
    }


_VQ_RULES = [  # LDM taming Encoder/Decoder names -> diffusers VQModel names
    (r"^(encoder)\.down\.(\d+)\.block\.(\d+)\.", r"\1.down_blocks.\2.resnets.\3."),
    (r"^(encoder)\.down\.(\d+)\.downsample\.", r"\1.down_blocks.\2.downsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
    (r"^(encoder|decoder)\.mid\.attn_1\.([qkv])\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
]


def vq_from_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """LDM/taming VQ keys -> diffusers VQModel keys (decoder levels reversed, 1x1 attention
    convs squeezed to linear weights); training-only `loss.*` entries are dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("loss."):
            continue
        match = re.match(r"^decoder\.up\.(\d+)\.(block|upsample)\.(\d+\.)?", key)
        if match:
            level = levels - 1 - int(match[1])
            inner = f"resnets.{match[3]}" if match[2] == "block" else "upsamplers.0."
            key = f"decoder.up_blocks.{level}.{inner}" + key[match.end() :]
        for pattern, replacement in _VQ_RULES:
            key = re.sub(pattern, replacement, key)
        if ".mid_block.attentions.0.to_" in key and key.endswith("weight") and value.dim() == 4:
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def _class_count_in(state: dict, expected: dict, configured: int) -> int | None:
    """The checkpoint's class count, when every mis-shaped tensor differs from the config's only
    in dimensions of the configured class count (else None: some other setting is wrong)."""
    found: set[int] = set()
    for k, v in expected.items():
        if k in state and state[k].shape != v.shape:
            if state[k].dim() != v.dim():
                return None
            dims = [i for i in range(v.dim()) if state[k].shape[i] != v.shape[i]]
            if any(v.shape[i] != configured for i in dims):
                return None
            found.update(state[k].shape[i] for i in dims)
    return found.pop() if len(found) == 1 else None


def _load_into(
    model: torch.nn.Module, state: dict, what: str, source: Path, classes: tuple[Path, str, int] | None = None
) -> None:
    """Strict load that says exactly which tensors are missing, unexpected or mis-shaped.

    `classes` = (config file, setting, its value): a mismatch that is only the class count is
    blamed on that setting of the config, not on the checkpoint. Weights holding NaN or Inf
    are refused by name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes and classes is not None:
        config, setting, configured = classes
        found = _class_count_in(state, expected, configured)
        if found is not None:
            raise InputError(
                f"{config}: {setting} is {configured} but {source} was trained with {found} "
                f"classes ({what}); set {setting.split()[-1]}: {found}"
            )
    if missing or unexpected or shapes:

        def head(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        parts = [
            f"{len(missing)} missing: {head(missing)}" if missing else "",
            f"{len(unexpected)} unexpected: {head(unexpected)}" if unexpected else "",
            f"{len(shapes)} mis-shaped: {head(shapes)}" if shapes else "",
        ]
        raise CheckpointError(f"{source}: {what} does not match the config; " + "; ".join(p for p in parts if p))
    check_finite(state.items(), f"{source} ({what})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def convert(config_path, ckpt_path=None, vq_ckpt_path=None, weights: str = "ema"):
    """Build an `SCADMPipeline` from the authors' config + checkpoint(s).

    `weights`: "ema" (the UNet EMA their FID numbers come from) or "raw" (what their demo used).
    `vq_ckpt_path`: CompVis's vq-f4 `model.ckpt`, used when given (else `first_stage_model.*`).
    """
    from .labels import CELEBAMASK_HQ, NUM_CLASSES, label_set_from_config
    from .pipeline import SCADMPipeline

    if weights not in ("ema", "raw"):
        raise InputError(f"--weights must be 'ema' or 'raw', got {weights!r}")
    if ckpt_path is None and vq_ckpt_path is None:
        raise InputError("give --ckpt (the authors' checkpoint) and/or --vq-ckpt (CompVis vq-f4)")
    cfg = read_authors_config(config_path)
    num_classes = cfg["unet"]["num_classes"]  # 19 = CelebAMask-HQ; other datasets get generic names
    unet = SCADMUNet(**cfg["unet"])
    style_encoder = StyleEncoder(**cfg["style_encoder"])
    vqvae = vq_f4(**cfg["vqvae"])

    if ckpt_path is not None:
        ckpt_path = Path(ckpt_path)
        state = load_checkpoint(ckpt_path)
        if not any(k.startswith(UNET_PREFIX) for k in state):
            raise CheckpointError(f"{ckpt_path}: no '{UNET_PREFIX}*' tensors: not an SCA-DM/LDM checkpoint")
        unet_state = _strip(state, UNET_PREFIX)
        for key in DEAD_UNET_KEYS:
            unet_state.pop(key, None)
        if weights == "ema":
            ema = _ema_unet(state, unet_state)
            if not ema:
                raise CheckpointError(f"{ckpt_path}: has no '{EMA_PREFIX}*' weights; use --weights raw")
            unet_state = {**unet_state, **ema}
            if len(ema) != len(unet_state):
                missing = sorted(set(unet_state) - set(ema))
                raise CheckpointError(f"{ckpt_path}: EMA lacks {len(missing)} UNet tensors, e.g. {missing[:3]}")
        config_path = Path(config_path)
        _load_into(unet, unet_state, "the UNet", ckpt_path, (config_path, "unet_config num_classes", num_classes))
        _load_into(
            style_encoder,
            _strip(state, STYLE_PREFIX),
            "the style encoder",
            ckpt_path,
            (config_path, "cond_stage_config num_mask_channels", num_classes),
        )
        if vq_ckpt_path is None:
            levels = len(cfg["vqvae"]["block_out_channels"])
            _load_into(vqvae, vq_from_ldm(_strip(state, VQ_PREFIX), levels), "the first stage", ckpt_path)
    if vq_ckpt_path is not None:
        vq_ckpt_path = Path(vq_ckpt_path)
        levels = len(cfg["vqvae"]["block_out_channels"])
        vq_state = load_checkpoint(vq_ckpt_path)
        if any(k.startswith(VQ_PREFIX) for k in vq_state):
            vq_state = _strip(vq_state, VQ_PREFIX)
        _load_into(vqvae, vq_from_ldm(vq_state, levels), "the first stage", vq_ckpt_path)

    return SCADMPipeline(
        unet=unet,
        style_encoder=style_encoder,
        vqvae=vqvae,
        schedule=NoiseSchedule(**cfg["schedule"]),
        label_set=CELEBAMASK_HQ
        if num_classes == NUM_CLASSES
        else label_set_from_config([f"class_{i}" for i in range(num_classes)]),
        image_size=cfg["image_size"],
        unconditional="zero",
    )
