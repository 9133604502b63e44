"""`scadm demo` for a model of real faces (`--model realistic`): edits of two public-domain photos.

Procedural faces mean nothing to a model trained on photos, so its demo takes the astronaut and
Grace Hopper (scadm.sample_photos), aligns and parses them as `scadm edit --mask auto` does, and
shows each reconstructed, with the other's hair and lips, and with random hair. A photo has no
ground truth for a swap, so the summary prints what can be measured: how much a swap changed the
pixels inside the swapped part against outside it (same seed as the reconstruction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .demo import DemoSummary, change_inside_outside, part_colour_error
from .editing import edit_codes
from .figures import enlarge, save_grid
from .io import mask_to_rgb, to_uint8
from .pipeline import SCADMPipeline
from .sample_photos import PARSER_TERMS, SOURCES, parse_sample_photos, require_photo_extras
from .settings import INTERACTIVE, RenderSettings

SWAPS = ("hair", "lips")  # parts (scadm.labels names or groups) each photo takes from the other
RANDOM_HAIR = 2  # random-hair samples per photo
CELL = 128  # px: smaller models' cells are enlarged to this (nearest), their labels fit above them


def run_photo_demo(out: Path, model: str | Path | SCADMPipeline, settings: RenderSettings = INTERACTIVE) -> DemoSummary:
    require_photo_extras("the photo demo")
    pipe = (
        model if isinstance(model, SCADMPipeline) else SCADMPipeline.from_pretrained(model, dtype=settings.torch_dtype)
    )
    parser_notes: list[str] = []
    faces = parse_sample_photos(pipe.image_size, pipe.label_set, notify=parser_notes.append)
    codes = {name: pipe.encode_style(x[None], labels[None]) for name, (x, labels) in faces.items()}
    hair = pipe.label_set.parse_parts("hair")
    seed = settings.seed
    rows, row_labels, swaps, errors = [], [], {}, []
    for name, (x, labels) in faces.items():
        other = next(n for n in faces if n != name)
        edits = [edit_codes("reconstruct", codes[name])[0]]
        edits += [edit_codes("partial", codes[name], codes[other], pipe.label_set.parse_parts(p))[0] for p in SWAPS]
        edits += [edit_codes("mix", codes[name], None, hair)[0]] * RANDOM_HAIR
        # reconstruction and swaps share one seed: what differs between them is the code alone
        seeds = [seed] * (1 + len(SWAPS)) + [seed + 1 + i for i in range(RANDOM_HAIR)]
        code = type(edits[0]).cat(edits)
        images = [to_uint8(im) for im in pipe(labels[None].expand(len(code), -1, -1), code, settings, seed=seeds)]
        photo, mask = to_uint8(x), labels.numpy()
        recon = images[0]
        errors.append(part_colour_error(recon, photo, mask))
        for part, image in zip(SWAPS, images[1:], strict=False):
            region = np.isin(mask, pipe.label_set.parse_parts(part))
            if region.any():  # a part the parser did not find has no inside to measure
                swaps[f"{part} {other} -> {name}"] = change_inside_outside(image, recon, region)
        zoom = max(1, CELL // pipe.image_size)
        rows.append([enlarge(c, zoom) for c in (photo, mask_to_rgb(mask, pipe.label_set), *images)])
        row_labels.append(f"{name} (other: {other})")
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "demo.png"
    columns = ["photo", "automatic mask", "reconstruction", *(f"{p} <- other" for p in SWAPS)]
    columns += ["random hair"] * RANDOM_HAIR
    title = f"scadm demo: two public-domain photos, {settings.label()}"
    save_grid(rows, figure, row_labels=row_labels, col_labels=columns, title=title)
    notes = (f"photos: {SOURCES}", f"masks: {PARSER_TERMS}", *(f"note: {n}" for n in parser_notes))
    return DemoSummary(figure, float(np.mean(errors)), swaps, notes)
