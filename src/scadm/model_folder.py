"""The folder a `SCADMPipeline` is saved to: `model_index.json` (what decides a render besides the
networks: image size, unconditional mode, schedule, label set) and one diffusers model folder per
network (`unet/`, `style_encoder/`, `vqvae/`: config.json + safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.models import VQModel

from scadm import __version__
from scadm.errors import CheckpointError, InputError
from scadm.labels import label_set_from_config
from scadm.models.loading import load_network
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.schedule import NoiseSchedule

INDEX_FILE = "model_index.json"
COMPONENTS = {"unet": SCADMUNet, "style_encoder": StyleEncoder, "vqvae": VQModel}


def save_folder(pipe, folder: str | Path) -> None:
    """`SCADMPipeline.save_pretrained`: the networks as safetensors, the rest in the index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:
        getattr(pipe, name).save_pretrained(folder / name, safe_serialization=True)
    index = {
        "_class_name": type(pipe).__name__,
        "scadm_version": __version__,
        "image_size": pipe.image_size,
        "unconditional": pipe.unconditional,
        "schedule": pipe.schedule.to_dict(),
        "labels": {"names": list(pipe.label_set.names), "palette": [list(c) for c in pipe.label_set.palette]},
    }
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def read_folder(folder: str | Path, class_name: str, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """`SCADMPipeline.from_pretrained`'s constructor arguments, networks in `dtype` (default
    float32); a CheckpointError naming the file when one is missing or unreadable."""
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise CheckpointError(
            f"{folder}: not a scadm model folder ({INDEX_FILE} missing); make one with `scadm convert` or `scadm train`"
        )
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{index_path}: corrupt JSON ({err.msg}, line {err.lineno})") from None
    found = index.get("_class_name") if isinstance(index, dict) else None
    if found != class_name:
        raise CheckpointError(f"{index_path}: describes a {found!r}, not an {class_name}")
    settings = _index_settings(index, index_path)  # before the networks: a broken index fails fast
    parts = {}
    for name, model_cls in COMPONENTS.items():
        sub = folder / name
        if not (sub / "config.json").is_file():
            raise CheckpointError(f"{sub}: missing (config.json not found)")
        parts[name] = load_network(model_cls, sub, name, dtype or torch.float32)
    return {**parts, **settings}


def _index_settings(index: dict[str, Any], index_path: Path) -> dict[str, Any]:
    """The index's schedule, label set, image size and unconditional mode; a CheckpointError
    naming the file and the entry when one is missing or malformed (a hand-edited or foreign
    index), never a KeyError."""
    missing = [key for key in ("schedule", "labels", "image_size", "unconditional") if key not in index]
    if missing:
        raise CheckpointError(f"{index_path}: no {', '.join(map(repr, missing))} entry")
    try:
        schedule = NoiseSchedule(**index["schedule"])
    except (TypeError, InputError) as err:
        raise CheckpointError(f"{index_path}: bad schedule ({err})") from None
    labels = index["labels"]
    try:
        label_set = label_set_from_config(labels["names"], [tuple(c) for c in labels["palette"]])
    except (KeyError, TypeError, ValueError, InputError) as err:
        raise CheckpointError(f"{index_path}: bad labels (want names and palette lists; {err})") from None
    return {
        "schedule": schedule,
        "label_set": label_set,
        "image_size": index["image_size"],
        "unconditional": index["unconditional"],
    }
