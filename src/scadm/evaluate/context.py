"""What every protocol shares: the models under test, the faces, the cached renders, and the
metric networks (loaded once, only when a protocol asks for them)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from scadm.errors import InputError
from scadm.evaluate.cache import EvalCache
from scadm.evaluate.data import DataSpec, Face, load_faces
from scadm.inversion import InversionCache
from scadm.io import to_uint8
from scadm.metrics.fid import RESIZE_CONVENTION, fid
from scadm.metrics.segmentation import SegmentationScores
from scadm.metrics.weights import file_sha256
from scadm.pipeline import SCADMPipeline
from scadm.regions import FRESH_NOISE, Preserve
from scadm.settings import SAMPLERS, RenderSettings
from scadm.style import StyleCode

FaceParser = Callable[[torch.Tensor], torch.Tensor]  # (N,3,H,W) in [-1,1] -> (N,H,W) label ids


@dataclass
class Options:
    """Every setting of `scadm evaluate`, defaults = the CLI's; face i is rendered with seed
    render.seed + i."""

    data: DataSpec
    render: RenderSettings = field(default_factory=RenderSettings)
    batch: int = 8
    device: str = "cpu"
    parser: str | None = None  # "procedural" | "bisenet" | None
    fid: bool = True
    lpips_net: str = "alex"
    noise_steps: tuple[int, ...] = (50, 100, 200, 1000)
    diversity_masks: int = 8
    diversity_samples: int = 4
    axis_guidance: tuple[float, ...] = (1.0, 1.2, 2.0)
    axis_steps: tuple[int, ...] = (25, 50)
    part_sets: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"r_eye": ("r_eye",), "lips": ("u_lip", "l_lip"), "hair": ("hair",), "all": ("all",)}
    )
    timing_samplers: tuple[str, ...] = SAMPLERS
    timing_steps: tuple[int, ...] = (10, 25, 50)
    timing_repeats: int = 3
    preserve: bool = True  # partial-swap / disentanglement: also region-preserving swaps (margin: default)
    progress: bool = True

    def as_dict(self) -> dict:
        out = asdict(self)
        out["data"] = self.data.describe()
        return out


@dataclass
class Model:
    name: str
    path: Path
    pipe: SCADMPipeline
    fingerprint: str  # sha256 over the folder's files: a changed model never reuses a cache


@dataclass(frozen=True)
class RenderItem:
    name: str  # file name in the cache
    face: int  # whose mask is rendered
    seed: int


def model_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{file_sha256(path, stat.st_mtime_ns, stat.st_size)}\n".encode())
    return digest.hexdigest()[:20]


def load_model(path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> Model:
    path = Path(path)
    pipe = SCADMPipeline.from_pretrained(path, device=device, dtype=dtype)
    return Model(path.name, path, pipe, model_fingerprint(path))


def _shown(path: Path) -> str:
    """A path relative to the working directory when inside it, so committed reports carry no
    machine-specific prefix."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class Evaluation:
    """Models x faces x settings; renders go through the cache (see `EvalCache`)."""

    def __init__(
        self,
        models: Sequence[Model],
        options: Options,
        cache: EvalCache,
        parser: FaceParser | None = None,
        features=None,
        lpips=None,
    ):
        if not models:
            raise InputError("--model: give at least one model folder")
        sizes = {m.pipe.image_size for m in models}
        if len(sizes) > 1:
            raise InputError(f"--model: the models render different sizes {sorted(sizes)}; compare like with like")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise InputError(f"--model: two models share a folder name ({names}); rename one")
        self.models, self.options, self.cache = list(models), options, cache
        self.parser, self._features, self._lpips = parser, features, lpips
        self.size = sizes.pop()
        self.label_set = models[0].pipe.label_set
        self.faces: list[Face] = load_faces(options.data, self.size, self.label_set)
        for m in self.models:  # each face is the target of every part set's preserved swap: invert it once
            # (64 trajectories of a 256 px model at 50 steps: 64 x 51 latents of 64 x 64 x 3 floats, 0.16 GB)
            m.pipe.inversions = InversionCache(capacity=max(m.pipe.inversions.capacity, min(len(self.faces), 64)))
        self._styles: dict[str, StyleCode] = {}

    # ---------------------------------------------------------------- inputs

    @cached_property
    def real(self) -> np.ndarray:
        return np.stack([f.image for f in self.faces])

    @cached_property
    def labels(self) -> np.ndarray:
        return np.stack([f.labels for f in self.faces])

    def styles(self, model: Model) -> StyleCode:
        """Every face's style code under `model`'s encoder (computed once per model)."""
        if model.name not in self._styles:
            codes, b = [], self.options.batch
            for s in range(0, len(self.faces), b):
                image = torch.from_numpy(self.real[s : s + b]).permute(0, 3, 1, 2).float() / 127.5 - 1
                codes.append(model.pipe.encode_style(image, torch.from_numpy(self.labels[s : s + b])))
            self._styles[model.name] = StyleCode.cat(codes)
        return self._styles[model.name]

    def blank_styles(self, model: Model) -> StyleCode:
        """Reference-free codes (every part random, paper §4.4) for every face's mask."""
        key = model.name + "/blank"
        if key not in self._styles:
            b = self.options.batch
            self._styles[key] = StyleCode.cat(
                [model.pipe.blank_style(torch.from_numpy(self.labels[s : s + b])) for s in range(0, len(self.faces), b)]
            )
        return self._styles[key]

    def parts(self, names: Sequence[str]) -> list[int]:
        return self.label_set.parse_parts(list(names))

    # ---------------------------------------------------------------- rendering

    def render(
        self,
        model: Model,
        job: str,
        items: Sequence[RenderItem],
        code_for: Callable[[RenderItem], StyleCode],
        settings: RenderSettings | None = None,
        preserve: int | None = None,
    ) -> np.ndarray:
        """uint8 (N, H, W, 3) renders of `items`, from the cache where possible. `preserve`: a margin
        in pixels: region-preserving edits of each item's own face (`scadm.regions.Preserve`)."""
        rs = settings or self.options.render
        key = self.render_key(model, job, rs, preserve)

        def render_batch(indices: list[int]) -> np.ndarray:
            chosen = [items[i] for i in indices]
            if preserve is not None:  # one target per call: each face is inverted (once per model)
                return np.concatenate([self._render_preserving(model, it, code_for(it), rs, preserve) for it in chosen])
            labels = torch.from_numpy(np.stack([self.faces[it.face].labels for it in chosen]))
            code = StyleCode.cat([code_for(it) for it in chosen])
            out = model.pipe(labels, code, rs, seed=[it.seed for it in chosen])
            return to_uint8(out)

        return self.cache.images(
            key,
            [it.name for it in items],
            render_batch,
            self.options.batch,
            desc=f"{model.name}: {job}, {rs.label()}",
            progress=self.options.progress,
        )

    def _render_preserving(
        self, model: Model, it: RenderItem, code: StyleCode, rs: RenderSettings, margin: int
    ) -> np.ndarray:
        face = self.faces[it.face]
        image = torch.from_numpy(face.image).permute(2, 0, 1)[None].float() / 127.5 - 1
        labels = torch.from_numpy(face.labels)[None]
        out = model.pipe(labels, code, rs, seed=[it.seed], preserve=Preserve(image, labels, margin))
        return to_uint8(out)

    def render_key(
        self, model: Model, job: str, settings: RenderSettings | None = None, preserve: int | None = None
    ) -> dict:
        """Everything a render depends on (and so the cache key of it and of its metrics). The
        sampling fields keep the key they had before seed and dtype joined `RenderSettings`, and
        dtype enters only when it is not fp32, so renders cached earlier stay valid."""
        rs = settings or self.options.render
        render = {k: getattr(rs, k) for k in ("steps", "guidance", "sampler", "eta")}
        if rs.dtype != RenderSettings().dtype:
            render["dtype"] = rs.dtype
        key = {
            "model": model.fingerprint,
            "data": self.options.data.describe(),
            "job": job,
            "seed": rs.seed,
            "render": render,
        }
        return key if preserve is None else {**key, "preserve": {"margin": preserve, "fresh": FRESH_NOISE}}

    def face_items(self, seed_offset: int = 0) -> list[RenderItem]:
        """One item per face; face i uses seed `seed + i` in every job, so two jobs differ only
        in their style codes and a pixel difference between them is the edit's doing."""
        return [RenderItem(f.name, i, self.options.render.seed + seed_offset + i) for i, f in enumerate(self.faces)]

    # ---------------------------------------------------------------- metrics

    def features(self, images: np.ndarray, key: dict) -> np.ndarray:
        if self._features is None:
            from scadm.metrics.fid import InceptionFeatures

            self._features = InceptionFeatures.load(self.options.device, batch_size=self.options.batch * 4)
        return self.cache.array(
            {"features": "inception-pool3", "resize": RESIZE_CONVENTION, **key},
            lambda: self._features(images, progress=self.options.progress),
        )

    def fid(self, images: np.ndarray, key: dict) -> float | None:
        """FID of `images` against the real faces (None when FID is switched off)."""
        if not self.options.fid:
            return None
        real = self.features(self.real, {"real": self.options.data.describe()})
        return fid(real, self.features(images, key))

    def parse(self, images: np.ndarray, key: dict) -> np.ndarray | None:
        """The face parser's label maps (N, H, W) of `images`, cached."""
        parser = self.parser
        if parser is None:
            return None

        def run() -> np.ndarray:
            out, b = [], self.options.batch
            for s in range(0, len(images), b):
                x = torch.from_numpy(images[s : s + b]).permute(0, 3, 1, 2).float() / 127.5 - 1
                out.append(np.asarray(parser(x.to(self.options.device)).cpu()))
            return np.concatenate(out)

        return self.cache.array({"parser": self.options.parser, "parser_weights": self._parser_fingerprint, **key}, run)

    @cached_property
    def _parser_fingerprint(self) -> str:
        """sha256 of the parser's weights, so a retrained parser never reuses cached labels."""
        if not isinstance(self.parser, torch.nn.Module):
            return getattr(self.parser, "__qualname__", type(self.parser).__qualname__)
        digest = hashlib.sha256()
        for name, tensor in sorted(self.parser.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]

    def segmentation(self, images: np.ndarray, key: dict) -> SegmentationScores | None:
        """mIoU / accuracy of the parser's labels of `images` against the masks they were made from."""
        parsed = self.parse(images, key)
        if parsed is None:
            return None
        return SegmentationScores.empty(self.label_set.num_classes).update(parsed, self.labels)

    def lpips(self):
        if self._lpips is None:
            from scadm.metrics.lpips import load_lpips

            self._lpips = load_lpips(self.options.lpips_net, self.options.device)
        return self._lpips

    def describe(self) -> dict:
        return {
            "models": {m.name: {"path": _shown(m.path), "fingerprint": m.fingerprint} for m in self.models},
            "data": self.options.data.describe(),
            "data_title": self.options.data.title(),
            "options": json.loads(json.dumps(self.options.as_dict(), default=str)),
        }
