"""`scadm demo`: every edit of the paper on held-out procedural faces, in one labelled figure.

The shipped demo model (`scadm/assets/demo-procedural-64`, trained by scadm on procedural faces)
edits faces the generator has never shown it; because the generator knows each part's true
style, the figure can show what a partial swap *should* look like next to what the model did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.synthetic import render_face, swap_parts
from .editing import edit_codes
from .figures import save_grid
from .io import mask_to_rgb, to_uint8
from .models.autoencoder import downsampling_factor
from .pipeline import SCADMPipeline
from .settings import INTERACTIVE, RenderSettings
from .shipped import DEMO_MODEL

#: held-out faces: the demo model trained on faces 0 .. N-1 of dataset seed 0
TARGET_SEED, REFERENCE_SEED = 900_000_017, 900_000_023


@dataclass
class DemoSummary:
    figure: Path
    reconstruction_error: float  # mean per-part colour error /255 (target vs its reconstruction)
    swaps: dict[str, tuple[float, float]]  # part swap -> (mean change inside, outside) /255
    notes: tuple[str, ...] = ()  # sources and terms of the inputs, printed last

    def __str__(self) -> str:
        lines = [
            f"figure: {self.figure}",
            f"reconstruction: mean per-part colour error {self.reconstruction_error:.1f}/255",
        ]
        lines += [
            f"swap {name:8s}: change inside the part {inside:5.1f}/255, outside {outside:4.1f}/255"
            for name, (inside, outside) in self.swaps.items()
        ]
        lines += self.notes
        return "\n".join(lines)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def part_colour_error(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the parts present of |mean colour in a - mean colour in b| (L1 over RGB / 3)."""
    errors = [np.abs(a[labels == k].mean(0) - b[labels == k].mean(0)).mean() for k in np.unique(labels)]
    return float(np.mean(errors))


def change_inside_outside(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Mean absolute pixel change between a and b inside `region` and outside it (/255)."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)
    return float(diff[region].mean()), float(diff[~region].mean())


def _visible_face(seed: int, size: int, pipe: SCADMPipeline):
    """The first face from `seed` whose r_eye, lips and hair the model can see. A model that
    resizes the mask by nearest sampling (the authors' rule) sees only every f-th pixel at its
    latent grid: at 64 px a small part can fall between the grid points, and then its style has no
    way into the image. With "any" downsampling every part is seen and the first face is taken."""
    if pipe.unet.config.get("mask_downsample", "nearest") == "any":
        return render_face(seed, size)
    f = downsampling_factor(pipe.vqvae)
    names = pipe.label_set.names
    wanted = [names.index(p) for p in ("r_eye", "u_lip", "l_lip", "hair")]
    while True:
        face = render_face(seed, size)
        if np.isin(wanted, face.labels[::f, ::f]).all():
            return face
        seed += 1


def run_demo(
    out: Path, model: str | Path | SCADMPipeline = DEMO_MODEL, settings: RenderSettings = INTERACTIVE
) -> DemoSummary:
    pipe = (
        model if isinstance(model, SCADMPipeline) else SCADMPipeline.from_pretrained(model, dtype=settings.torch_dtype)
    )
    seed = settings.seed
    size = pipe.image_size
    target, reference = _visible_face(TARGET_SEED, size, pipe), render_face(REFERENCE_SEED, size)
    labels = torch.from_numpy(target.labels)[None]
    tgt = pipe.encode_style(_tensor(target.image)[None], labels)
    ref = pipe.encode_style(_tensor(reference.image)[None], torch.from_numpy(reference.labels)[None])
    names = pipe.label_set.names

    def render(mode, parts=None, alphas=(0.0, 0.25, 0.5, 0.75, 1.0), seeds=None):
        code, _ = edit_codes(mode, tgt, ref, parts, alphas)
        if seeds is not None:
            code = code.repeat(len(seeds))
        images = pipe(labels.expand(len(code), -1, -1), code, settings, seed=seeds if seeds is not None else seed)
        return [to_uint8(x) for x in images]

    recon = render("reconstruct")[0]
    rows = [[target.image, mask_to_rgb(target.labels, pipe.label_set), reference.image, recon, render("swap")[0]]]
    row_labels = ["target | mask | reference | reconstruction | total swap"]
    swaps = {}
    # One eye: r_eye, the subject's right eye, on the image's left (scadm.labels). It is the eye
    # this demo swapped when procedural faces still called it l_eye, so its numbers carry over.
    for title, part_names in (("hair", ["hair"]), ("r_eye", ["r_eye"]), ("lips", ["u_lip", "l_lip"])):
        parts = [names.index(p) for p in part_names]
        result = render("partial", parts)[0]
        truth = swap_parts(target, reference, part_names).image
        swaps[title] = change_inside_outside(result, recon, np.isin(target.labels, parts))
        rows.append([result, truth])
        row_labels.append(f"swap {title}: result | truth")
    hair = [names.index("hair")]
    rows.append(render("mix", hair, seeds=[seed + i for i in range(4)]))
    row_labels.append("reference + random hair")
    rows.append(render("random", seeds=[seed + 10 + i for i in range(4)]))
    row_labels.append("noise-based samples")
    rows.append(render("interpolate", hair))
    row_labels.append("interpolate hair 0 -> 1")
    rows.append(render("interpolate"))
    row_labels.append("interpolate all 0 -> 1")

    out.mkdir(parents=True, exist_ok=True)
    figure = out / "demo.png"
    save_grid(rows, figure, row_labels=row_labels, title=f"scadm demo: held-out procedural faces, {settings.label()}")
    return DemoSummary(figure, part_colour_error(recon, target.image, target.labels), swaps)
