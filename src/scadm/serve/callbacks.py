"""The page's callbacks: load a face (upload, photo parsing, example), paint the mask, render an edit.

Each callback turns every bad request into a message in the page (`shows_errors`), and works only
on what the page passes it (the session's own gr.State), never on state of its own, so users never
see each other's faces.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from scadm.serve import environment  # noqa: F401  (sets gradio's environment: before gradio is imported)

# isort: split

import gradio as gr
import numpy as np

from scadm.editing import EditSettings, PartChoice
from scadm.errors import ScadmError
from scadm.pipeline import SCADMPipeline
from scadm.serve import editor
from scadm.serve.editor import Face
from scadm.serve.examples import Examples
from scadm.serve.views import face_line, face_strip, legend_html, painter_value, panel_order
from scadm.settings import INTERACTIVE, RenderSettings
from scadm.shipped import shipped_name

log = logging.getLogger("scadm.serve")
#: the largest seed the page draws and its seed box takes. Smaller than scadm.settings.MAX_SEED
#: (2**64 - 1, torch's range) because the seed round-trips through the browser, where gr.Number's
#: value is a JavaScript double, exact only up to 2**53 - 1: a larger seed shown in the page would
#: come back rounded, and the locked seed would replay another face. 2**31 - 1 is well inside that.
PAGE_SEED_MAX = 2**31 - 1
T = TypeVar("T")


class Models:
    """The pipeline in each precision, loaded on first use (casting one in place would lose bits)."""

    def __init__(self, folder: str | Path, device: str):
        self.folder, self.device = str(folder), device
        self.replay_model = shipped_name(folder) or self.folder  # what the bundle's replay line says
        self._pipes: dict[str, SCADMPipeline] = {}

    def __getitem__(self, dtype: str) -> SCADMPipeline:
        if dtype not in self._pipes:
            self._pipes[dtype] = SCADMPipeline.from_pretrained(
                self.folder, device=self.device, dtype=RenderSettings(dtype=dtype).torch_dtype
            )
        return self._pipes[dtype]

    @property
    def base(self) -> SCADMPipeline:
        return self[INTERACTIVE.dtype]


@dataclass
class RenderOptions(Generic[T]):
    """The render options: their components in the layout, their values in `Callbacks.generate`;
    the one owner of their names and of the order in which the page passes them."""

    global_weight: T
    guidance: T
    sampler: T
    steps: T
    seed: T
    lock: T
    dtype: T
    preserve: T

    def as_list(self) -> list[T]:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def take(cls, values: tuple) -> tuple[RenderOptions, tuple]:
        """(the options, the values after them) from the values the page passed."""
        n = len(fields(cls))
        return cls(*values[:n]), values[n:]


def shows_errors(fn):
    """Bad input -> its one-line message in the page; anything else -> logged, and a short
    message: one bad request never takes the server down."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ScadmError as err:
            raise gr.Error(without_paths(str(err)), title="Input problem") from None
        except Exception as err:  # the server must survive any request
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(err).__name__}); details are in the server log") from None

    return wrapper


def without_paths(message: str) -> str:
    """A message for the page: every absolute path cut to its file name (uploads live in temporary
    folders whose paths mean nothing to the user and describe the server to a stranger)."""
    return re.sub(r"(?<![\w.])(?:/[^/\s:'\"]+)+/([^/\s:'\"]+)", r"\1", message)


def _loaded(face: Face | None) -> Face:
    if face is None:
        raise gr.Error("load a target first")
    return face


def _valid(role: str, face: Face | None) -> Face:
    if face is None:
        raise gr.Error(
            f"{role}: no valid face (an upload was refused); upload a valid image and mask, or pick an example",
            title="Nothing to render",
        )
    return face


class Callbacks:
    """The callbacks of one page: one model, its label set and its examples.

    A role's callbacks ("target" or "reference") answer its outputs in one order: its face (state),
    its view, for the target the mask (state), the painter and the legend, then its line, its example
    picker and its two upload buttons. A face there shows, None clears, gr.skip() keeps what is shown.
    """

    def __init__(self, models: Models, examples: Examples):
        pipe = models.base
        self.models, self.examples = models, examples
        self.label_set, self.size = pipe.label_set, pipe.image_size
        self.scale = editor.display_scale(self.size)
        self.names = list(self.label_set.names)
        self.outdir = Path(tempfile.mkdtemp(prefix="scadm-serve-"))

    @shows_errors
    def upload(self, role: str, image_file, mask_file, auto: bool, just: str):
        """An upload to `role`: the image, the mask or both, or a photo to parse (`auto`)."""
        face, line, image_file, mask_file = self._read_upload(role, image_file, mask_file, auto, just)
        example = None if face is None or isinstance(face, Face) else gr.skip()  # no longer an example
        return self._outputs(role, face, line, image_file, mask_file, example)

    @shows_errors
    def pick(self, role: str, choice, new: bool = False):
        """The example `choice` (or a new random one) for `role`."""
        face, example = self.examples.face(choice, new)
        return self._outputs(role, face, face_line(role, face, self.size), None, None, example)

    @shows_errors
    def apply_strokes(self, face: Face | None, labels: np.ndarray, painting: dict | None):
        return self._mask_view(_loaded(face), self._painted(labels, painting))

    @shows_errors
    def reset_mask(self, face: Face | None):
        face = _loaded(face)
        return self._mask_view(face, face.labels)

    def _read_upload(self, role: str, image_file, mask_file, auto: bool, just: str):
        """-> (face or None, line, image_file, mask_file). A refused file is dropped and the face
        cleared, so that nothing shown or rendered comes from a file the page said it refused.
        Half a pair is checked on its own and keeps the face that was there (view = state)."""
        try:
            if image_file and mask_file:
                face, notes = editor.load_upload(image_file, mask_file, self.label_set, self.size, role)
            elif image_file and auto:
                face, notes = editor.auto_mask_upload(image_file, self.label_set, self.size, role)
            else:
                half, kind = (image_file, "image") if image_file else (mask_file, "mask")
                editor.check_upload(half, kind, self.label_set, self.size, role)
                wanted = "its mask (or tick 'align and parse')" if kind == "image" else "the image"
                return gr.skip(), f"{role}: {Path(half).name} ok; upload {wanted} to use it", image_file, mask_file
        except ScadmError as err:
            message = without_paths(str(err))
            gr.Warning(message, title="Upload refused")
            image_file, mask_file = (None, mask_file) if just == "image" else (image_file, None)
            return None, f"<span class='refused'>refused: {message}</span>", image_file, mask_file
        for note in notes:
            gr.Info(note)
        return face, face_line(role, face, self.size, image_file, mask_file), image_file, mask_file

    def _outputs(self, role: str, face, line: str, image_file, mask_file, example) -> tuple:
        """`role`'s outputs, in the order the class docstring gives."""
        with_mask = role == "target"  # the reference has no mask to paint
        shown: tuple[Any, ...]
        if isinstance(face, Face):
            shown = (face, face_strip(face, self.label_set), *(self._mask_view(face, face.labels) if with_mask else ()))
        elif face is None:
            shown = (None, None, *((None, painter_value(None), "") if with_mask else ()))
        else:
            shown = (gr.skip(),) * (5 if with_mask else 2)
        return (*shown, line, example, image_file, mask_file)

    def _mask_view(self, face: Face, labels: np.ndarray) -> tuple[np.ndarray, dict, str]:
        """(the mask state, the painter's value, the legend) for `labels` over `face`."""
        picture = editor.overlay_picture(face, labels, self.label_set, self.scale)
        return labels, painter_value(picture), legend_html(labels, self.label_set)

    def _painted(self, labels: np.ndarray, painting: dict | None) -> np.ndarray:
        for layer in (painting or {}).get("layers") or []:
            labels = editor.labels_from_strokes(layer, labels, self.label_set)
        return labels

    @shows_errors
    def generate(
        self,
        target: Face | None,
        reference: Face | None,
        labels: np.ndarray,
        painting,
        history,
        progress: gr.Progress = gr.Progress(),
        *values,
    ):
        """Render the edit the page describes: `values` are the RenderOptions, then each part's
        source and weight in panel order. -> result, history (gallery and state), seed, files, status.

        `progress`: gradio's bar, fed by every sampler step (and inversion step, for a preserving
        edit). gradio injects it only into a positional parameter that comes before `*values`
        (it stops looking at the first *args), finding it by this default; the page's inputs
        fill the other parameters around it."""
        target, reference = _valid("target", target), _valid("reference", reference)
        options, parts = RenderOptions.take(values)
        settings = self._settings(options, parts)
        render = settings.render
        labels = self._painted(labels, painting)
        missing = editor.missing_parts(settings, reference, labels, self.label_set)
        start = time.perf_counter()
        progress((0, render.steps), desc="Rendering", unit="steps")  # the bar shows while styles encode

        def step(done: int, total: int) -> None:
            progress((done, total), desc="Rendering", unit="steps")

        result = editor.render(self.models[render.dtype], target, reference, labels, settings, progress=step)
        seconds = time.perf_counter() - start
        files = self._downloads(result, target, reference, labels, settings)
        edits = (
            ", ".join(f"{n}<-{s}" + (f" {w:.2g}" if w < 1 else "") for n, (s, w) in settings.edited_parts().items())
            or "reconstruction"
        )
        # the exact PNG (no lossy re-encoding for the page): the page enlarges it, pixelated
        history = [(files[0], f"seed {render.seed}: {edits}"), *(history or [])]
        status = f"Rendered in {seconds:.1f} s ({render.label()}, seed {render.seed}): {edits}."
        if missing:
            warning = (
                f"The reference has no {' or '.join(missing)}: that style is invented, not the reference's "
                "(pick a reference that has it)."
            )
            gr.Warning(warning, title="Missing in the reference")
            status += f"\n\n**Warning:** {warning}"
        return files[0], history, history, render.seed, files, status

    def _downloads(
        self, result: np.ndarray, target: Face, reference: Face, labels: np.ndarray, settings: EditSettings
    ) -> list[str]:
        """Write the bundle that `scadm edit` replays, and its zip; -> result, mask, settings, zip."""
        folder = self.outdir / f"{int(time.time() * 1000)}-{settings.render.seed}"
        paths = editor.write_bundle(
            folder, result, target, reference, labels, settings, self.label_set, model=self.models.replay_model
        )
        bundle = folder / "scadm-edit.zip"
        with zipfile.ZipFile(bundle, "w") as z:
            for p in paths.values():
                z.write(p, p.name)
        return [str(paths["result"]), str(paths["mask"]), str(paths["settings"]), str(bundle)]

    def _settings(self, options: RenderOptions[Any], parts: tuple) -> EditSettings:
        """The page's choices as the EditSettings `scadm edit --settings` replays; an unlocked (or
        empty) seed draws a new one."""
        sources, weights = parts[: len(self.names)], parts[len(self.names) :]
        choices = {
            n: PartChoice(s, float(w))
            for n, s, w in zip(panel_order(self.names), sources, weights, strict=True)
            if s != "target"
        }
        seed = int(options.seed) if options.lock and options.seed is not None else random.randrange(PAGE_SEED_MAX)
        render = INTERACTIVE.replace(
            steps=int(options.steps),
            guidance=float(options.guidance),
            sampler=options.sampler,
            seed=seed,
            dtype=options.dtype,
        )
        return EditSettings(choices, float(options.global_weight), render, preserve=bool(options.preserve)).check(
            self.label_set
        )
