"""MobileStyleGAN (Belousov 2021, distilled from StyleGAN2-FFHQ): photo-realistic 1024 px faces
from seeds, offline, through OpenVINO on a CPU or scadm's torch interpreter of the same IR.

The network ships as OpenVINO IR inside the PyPI package `random-face==2021.7.21.1` (installed with
--no-deps; its engine uses OpenVINO's removed IECore API, so it is never imported: the four files
are found through the import system and checked by SHA-256).

Seed rule: face `seed`'s latent is numpy's PCG64(seed).standard_normal(512) (float64, rounded to
float32). Truncation: w = mean + psi (w - mean), with the mean of MEAN_SAMPLES mapped latents drawn
from PCG64(MEAN_SEED) in one (MEAN_SAMPLES, 512) block. Both backends run in float32 (OpenVINO
would pick bf16 on CPUs that have it; TF32 is off on GPUs), so they give the same images up to
float rounding.

Licence: the weights derive from NVIDIA's StyleGAN2-FFHQ (NVIDIA Source Code License-NC) trained
on FFHQ (CC BY-NC-SA 4.0): the generator, its images and any model trained on them are for
non-commercial research only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scadm.data.stylegan_options import BACKENDS, LICENCE  # noqa: F401 (this module's API)
from scadm.errors import InputError

PACKAGE, DISTRIBUTION, VERSION = "random_face", "random-face", "2021.7.21.1"
INSTALL_HINT = (
    f"install the face generator: `pip install --no-deps {DISTRIBUTION}=={VERSION} "
    "openvino` (or `make stylegan-extras` in a scadm checkout)"
)
SHA256 = {
    "MappingNetwork.xml": "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b",
    "MappingNetwork.bin": "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305",
    "SynthesisNetwork.xml": "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
    "SynthesisNetwork.bin": "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
}
STYLE_DIM = 512
IMAGE_SIZE = 1024
MEAN_SAMPLES = 4096  # as random-face's own config averages
MEAN_SEED = 2**32 - 1  # a seed no face of a dataset of < 4 billion faces uses


NETWORKS = ("MappingNetwork", "SynthesisNetwork")


def generator_files(folder: str | Path | None = None, check: bool = True) -> dict[str, Path]:
    """The four IR files: from the installed random-face package, or from `folder` (a copy of
    them); each checked by SHA-256 unless `check` is false."""
    if folder is None:
        try:
            installed = importlib.metadata.version(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise InputError(f"the face generator is not installed; {INSTALL_HINT}") from None
        if installed != VERSION:
            raise InputError(f"{DISTRIBUTION} {installed} is installed, scadm needs {VERSION}; {INSTALL_HINT}")
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise InputError(f"{DISTRIBUTION} is registered but its package is missing; {INSTALL_HINT}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = {name: Path(folder) / name for name in SHA256}
    for name, path in files.items():
        if not path.is_file():
            raise InputError(f"{path}: missing; {INSTALL_HINT}")
        if check and hashlib.sha256(path.read_bytes()).hexdigest() != SHA256[name]:
            raise InputError(
                f"{path}: not the {DISTRIBUTION}=={VERSION} file (SHA-256 differs); reinstall it: {INSTALL_HINT}"
            )
    return files


def latents(seeds) -> np.ndarray:
    """(N, 512) float32: face seed s's latent (see the module docstring)."""
    return np.stack([np.random.Generator(np.random.PCG64(int(s))).standard_normal(STYLE_DIM) for s in seeds]).astype(
        np.float32
    )


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    has_openvino = importlib.util.find_spec("openvino") is not None
    if backend == "openvino" and not has_openvino:
        raise InputError(f"backend openvino: OpenVINO is not installed; {INSTALL_HINT}, or use --backend torch")
    if backend == "auto":
        return "openvino" if has_openvino else "torch"
    return backend


def checked_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device: {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: scadm runs on cpu or cuda")
    return device


class FaceGenerator:
    """seeds -> (N, 3, 1024, 1024) float32 faces in about [-1, 1] (RGB, FFHQ-aligned), on the CPU
    through OpenVINO or on any torch device through scadm.data.openvino_ir."""

    def __init__(
        self,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        folder: str | Path | None = None,
        threads: int | None = None,
    ):
        self.backend = resolve_backend(backend)
        self.device = checked_device(device)
        if self.backend == "openvino" and self.device.type != "cpu":
            raise InputError(f"backend openvino: runs on the CPU, not {self.device}; use --backend torch")
        files = generator_files(folder)
        self.threads = threads or torch.get_num_threads()
        if self.backend == "openvino":
            try:
                from openvino import Core
            except ImportError:  # openvino < 2023.1 has no top-level Core
                raise InputError(
                    f"OpenVINO {_version('openvino')} is too old: `pip install "
                    "'openvino>=2023.1'`, or use --backend torch"
                ) from None
            self._core = Core()
            self._models = {
                name: self._core.read_model(files[f"{name}.xml"], files[f"{name}.bin"]) for name in NETWORKS
            }
            self._compiled: dict[tuple[str, int], Any] = {}
        else:
            from scadm.data.openvino_ir import IRNetwork

            self._nets = {
                name: IRNetwork.load(files[f"{name}.xml"], files[f"{name}.bin"]).to(self.device) for name in NETWORKS
            }
        self._mean: torch.Tensor | None = None

    def _run(self, name: str, inp: str, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch":
            with torch.no_grad(), _float32_matmuls():
                return next(iter(self._nets[name](**{inp: x.to(self.device)}).values())).float()
        key = (name, x.shape[0])
        if key not in self._compiled:  # the IR's batch is 1: reshape, compile once per size
            model = self._models[name].clone()
            model.reshape({inp: [x.shape[0], STYLE_DIM]})
            self._compiled[key] = self._core.compile_model(
                model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads}
            )
        compiled = self._compiled[key]
        return torch.from_numpy(compiled({inp: x.cpu().numpy()})[compiled.output(0)].copy())

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """(N, 512) latents -> (N, 512) styles."""
        return self._run("MappingNetwork", "var", z)

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        return self._run("SynthesisNetwork", "style", w)

    @property
    def mean_style(self) -> torch.Tensor:
        """(1, 512): the mean style of MEAN_SAMPLES latents from MEAN_SEED."""
        if self._mean is None:
            z = (
                np.random.Generator(np.random.PCG64(MEAN_SEED))
                .standard_normal((MEAN_SAMPLES, STYLE_DIM))
                .astype(np.float32)
            )
            styles = torch.cat([self.map(torch.from_numpy(c)).cpu() for c in np.split(z, 8)])
            self._mean = styles.double().mean(0, keepdim=True).float()
        return self._mean

    def __call__(self, seeds, psi: float) -> torch.Tensor:
        w = self.map(torch.from_numpy(latents(seeds))).cpu()
        mean = self.mean_style
        return self.synthesize(mean + psi * (w - mean))


@contextlib.contextmanager
def _float32_matmuls():
    """TF32 off for the duration, so a GPU computes the same float32 products as the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
