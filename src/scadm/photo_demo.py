"""`scadm demo` for a model of real faces (`--model realistic`): edits of two public-domain photos.

Procedural faces mean nothing to a model trained on photos, so its demo takes the astronaut and
Grace Hopper (scadm.sample_photos), aligns and parses them as `scadm edit --mask auto` does, and
shows each reconstructed (a plain render: what the model makes of the photo), with the other's hair
and lips, and with random hair. The edits are region-preserving (`scadm edit --preserve`,
scadm.regions.Preserve): a person editing a photo wants the rest of it kept, and the realistic
model's plain swaps re-render the whole face (docs/realistic-photos.md). A photo has no ground
truth for a swap, so the summary prints what can be measured, as docs/realistic-photos.md measures
preserved edits: how much a swap changed the pixels inside the swapped part against outside it,
both against the aligned photo (outside, only the margin around the part can change).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .demo import DemoSummary, change_inside_outside, part_colour_error
from .editing import edit_codes
from .figures import enlarge, save_grid
from .io import mask_to_rgb, to_uint8
from .pipeline import SCADMPipeline
from .regions import Preserve
from .sample_photos import PARSER_TERMS, SOURCES, parse_sample_photos, require_photo_extras
from .settings import INTERACTIVE, RenderSettings

SWAPS = ("hair", "lips")  # parts (scadm.labels names or groups) each photo takes from the other
RANDOM_HAIR = 2  # random-hair samples per photo
CELL = 128  # px: smaller models' cells are enlarged to this (nearest), their labels fit above them
KEPT = "edits keep the rest of the photo (scadm edit --preserve)"


def render_photo_edits(
    pipe: SCADMPipeline, faces: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: RenderSettings
) -> dict[str, list[np.ndarray]]:
    """name -> [reconstruction, one swap per SWAPS from the other face, RANDOM_HAIR random hairs]
    (uint8 (H, W, 3)) for two faces name -> (image (3, H, W) in [-1, 1], labels (H, W)). The
    reconstruction is a plain render; the edits preserve the face outside the edited parts."""
    codes = {name: pipe.encode_style(x[None], labels[None]) for name, (x, labels) in faces.items()}
    hair = pipe.label_set.parse_parts("hair")
    seed = settings.seed
    results = {}
    for name, (x, labels) in faces.items():
        other = next(n for n in faces if n != name)
        edits = [edit_codes("partial", codes[name], codes[other], pipe.label_set.parse_parts(p))[0] for p in SWAPS]
        edits += [edit_codes("mix", codes[name], None, hair)[0]] * RANDOM_HAIR
        code = type(edits[0]).cat(edits)
        # reconstruction and swaps share one seed: what differs between them is the code alone
        recon = pipe(labels[None], codes[name], settings, seed=seed)
        seeds = [seed] * len(SWAPS) + [seed + 1 + i for i in range(RANDOM_HAIR)]
        kept = Preserve(x[None], labels[None])
        edited = pipe(labels[None].expand(len(code), -1, -1), code, settings, seed=seeds, preserve=kept)
        results[name] = [to_uint8(im) for im in torch.cat([recon, edited])]
    return results


def run_photo_demo(out: Path, model: str | Path | SCADMPipeline, settings: RenderSettings = INTERACTIVE) -> DemoSummary:
    require_photo_extras("the photo demo")
    pipe = (
        model if isinstance(model, SCADMPipeline) else SCADMPipeline.from_pretrained(model, dtype=settings.torch_dtype)
    )
    parser_notes: list[str] = []
    faces = parse_sample_photos(pipe.image_size, pipe.label_set, notify=parser_notes.append)
    rendered = render_photo_edits(pipe, faces, settings)
    rows, row_labels, swaps, errors = [], [], {}, []
    for name, (x, labels) in faces.items():
        other = next(n for n in faces if n != name)
        photo, mask = to_uint8(x), labels.numpy()
        images = rendered[name]
        errors.append(part_colour_error(images[0], photo, mask))
        for part, image in zip(SWAPS, images[1:], strict=False):
            region = np.isin(mask, pipe.label_set.parse_parts(part))
            if region.any():  # a part the parser did not find has no inside to measure
                # against the photo: what a preserved edit keeps outside the part (docs/realistic-photos.md)
                swaps[f"{part} {other} -> {name}"] = change_inside_outside(image, photo, region)
        zoom = max(1, CELL // pipe.image_size)
        rows.append([enlarge(c, zoom) for c in (photo, mask_to_rgb(mask, pipe.label_set), *images)])
        row_labels.append(f"{name} (other: {other})")
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "demo.png"
    columns = ["photo", "automatic mask", "reconstruction (plain)", *(f"{p} <- other, rest kept" for p in SWAPS)]
    columns += ["random hair, rest kept"] * RANDOM_HAIR
    title = f"scadm demo: two public-domain photos, {KEPT}, {settings.label()}"
    save_grid(rows, figure, row_labels=row_labels, col_labels=columns, title=title)
    notes = (
        f"swaps: {KEPT}; change against the aligned photo",
        f"photos: {SOURCES}",
        f"masks: {PARSER_TERMS}",
        *(f"note: {n}" for n in parser_notes),
    )
    return DemoSummary(figure, float(np.mean(errors)), swaps, notes)
