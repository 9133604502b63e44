"""The gradio page of `scadm serve`: inputs, mask painting, per-part controls, results.

Safe by default: binds 127.0.0.1, takes files only as uploads (never a server path), caps
uploads at 20 MB, turns every bad request into a message in the page, and queues requests so
concurrent users wait their turn instead of sharing the model mid-render. Every handler works on
the session's own state (gr.State), so users never see each other's faces.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import functools
import logging
import random
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from scadm.editing import SOURCES, EditSettings, PartChoice
from scadm.errors import ScadmError
from scadm.io import mask_to_rgb
from scadm.pipeline import SCADMPipeline
from scadm.serve import editor
from scadm.serve.editor import Face
from scadm.serve.examples import Examples
from scadm.settings import DTYPES, INTERACTIVE, SAMPLERS, RenderSettings, resolve_device
from scadm.shipped import model_domain, resolve_model, shipped_name

log = logging.getLogger("scadm.serve")
MAX_SEED = 2**31 - 1
#: the parts people edit most come first in the parts panel
FIRST_PARTS = ("hair", "skin", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "mouth", "nose")
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
#: laid out for a laptop screen (1280x800): inputs, parts and the result with Generate side by
#: side at the top; the mask painter, render options and history below
CSS = """
.legend {display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 13px}
.legend span.sw {display: inline-block; width: 12px; height: 12px; border: 1px solid #888; margin-right: 4px;
                 vertical-align: -1px}
.legend .absent {opacity: 0.45}
.face-line {font-size: 13px; overflow-wrap: anywhere}
.face-line .refused {color: #c0392b}
#parts {gap: 4px}
.part-row {align-items: center; gap: 6px !important; flex-wrap: nowrap !important}
.part-row > .block {padding: 2px 4px !important}
.part-row .part-name-box {flex: 0 0 52px !important; max-width: 52px}
.part-name {display: inline-block; font-size: 13px; font-weight: 600}
.part-row .part-source {flex: 0 0 262px !important; overflow: visible !important}
.part-source .wrap {flex-wrap: nowrap !important; gap: 3px !important}
.part-source label {padding: 2px 6px !important; font-size: 12px !important}
.part-weight > .wrap {display: flex; flex-direction: row-reverse; align-items: center; gap: 4px}
.part-weight .head input[type=number] {width: 44px; padding: 2px}
.part-weight .slider_input_container {flex: 1 1 auto}
.part-weight .slider_input_container > span {display: none}
.scadm-view img, #result img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
#history img {image-rendering: pixelated}
#history .thumbnail-item {aspect-ratio: auto; height: auto; display: flex; flex-direction: column}
#history .thumbnail-item img {aspect-ratio: 1; height: auto}
#history .caption-label {position: static; white-space: normal; overflow: visible; max-width: none; opacity: 1;
                         border: none; border-radius: 0}
"""


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


def _shows_errors(fn):
    """Bad input -> its one-line message in the page; anything else -> logged, and a short
    message: one bad request never takes the server down."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ScadmError as err:
            raise gr.Error(_without_paths(str(err)), title="Input problem") from None
        except Exception as err:  # the server must survive any request
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(err).__name__}); details are in the server log") from None

    return wrapper


def _without_paths(message: str) -> str:
    """A message for the page: every absolute path cut to its file name (uploads live in temporary
    folders whose paths mean nothing to the user and describe the server to a stranger)."""
    return re.sub(r"(?<![\w.])(?:/[^/\s:'\"]+)+/([^/\s:'\"]+)", r"\1", message)


def legend_html(labels: np.ndarray, label_set) -> str:
    """Class colours with the share of the mask each class covers; absent classes greyed."""
    counts = np.bincount(labels.reshape(-1), minlength=label_set.num_classes)
    items = []
    for name, colour, n in zip(label_set.names, label_set.palette, counts, strict=True):
        share = f"{100 * n / labels.size:.1f}%" if n else "absent"
        items.append(
            f'<span class="{"present" if n else "absent"}"><span class="sw" '
            f'style="background: rgb{tuple(colour)}"></span>{name} <small>{share}</small></span>'
        )
    return f'<div class="legend" id="legend">{"".join(items)}</div>'


def _panel_order(names: list[str]) -> list[str]:
    return [n for n in FIRST_PARTS if n in names] + [n for n in names if n not in FIRST_PARTS]


def _rgb(colour) -> str:
    return f"rgb({colour[0]}, {colour[1]}, {colour[2]})"


def _face_column(role: str, examples: Examples, index: int, scale: int = 4):
    """The target's or the reference's view, example picker and upload buttons, with one line
    below naming the files in use (or why an upload was refused)."""
    example = examples.default(index)
    with gr.Column(scale=scale, min_width=200):
        view = gr.Image(
            label=f"{role}: face | mask",
            interactive=False,
            elem_id=f"{role}-view",
            height=150,
            format="png",
            buttons=[],
            elem_classes="scadm-view",
        )
        with gr.Row(equal_height=True):
            picker = gr.Dropdown(
                examples.choices,
                value=example,
                show_label=False,
                container=False,
                elem_id=f"{role}-example",
                min_width=90,
                scale=2,
            )
            new = gr.Button(
                "random face", size="sm", elem_id=f"{role}-new", min_width=80, scale=1, visible=examples.random
            )
        with gr.Row(equal_height=True):
            image = gr.UploadButton(
                "upload image", file_types=UPLOAD_TYPES, size="sm", elem_id=f"{role}-image", min_width=80
            )
            mask = gr.UploadButton("upload mask", file_types=[".png"], size="sm", elem_id=f"{role}-mask", min_width=80)
        line = gr.Markdown(f"{role}: example {example}", elem_id=f"{role}-files", elem_classes="face-line")
    return view, picker, new, image, mask, line


def build_app(models: Models) -> gr.Blocks:
    pipe = models.base
    label_set, size = pipe.label_set, pipe.image_size
    scale = editor.display_scale(size)
    names = list(label_set.names)
    colours: list[str | tuple[str, float]] = [_rgb(c) for c in label_set.palette]
    outdir = Path(tempfile.mkdtemp(prefix="scadm-serve-"))
    on_gpu = pipe.device.type == "cuda"
    examples = Examples(model_domain(models.folder), size, label_set)

    def brush(name: str) -> gr.Brush:
        return gr.Brush(
            colors=colours,
            default_color=colours[names.index(name)],
            color_mode="fixed",
            default_size=max(2, scale * 3 // 2),
        )

    def editor_value(face: Face, labels: np.ndarray) -> dict:
        return {"background": editor.overlay_picture(face, labels, label_set, scale), "layers": [], "composite": None}

    def show_face(face: Face):
        """The face and its mask side by side, at the model's pixels (the page enlarges them)."""
        return np.concatenate([face.image, mask_to_rgb(face.labels, label_set)], axis=1)

    def face_line(role: str, face: Face, image_file=None, mask_file=None) -> str:
        files = " + ".join(Path(f).name for f in (image_file, mask_file) if f)
        return f"{role}: {files or face.name}, {size}x{size}"

    def upload(role: str, image_file, mask_file, auto: bool, just: str):
        """-> (face or None, line, image_file, mask_file). A refused file is dropped and the face
        cleared, so that nothing shown or rendered comes from a file the page said it refused.
        Half a pair is checked on its own and keeps the face that was there (view = state)."""
        try:
            if image_file and mask_file:
                face, notes = editor.load_upload(image_file, mask_file, label_set, size, role)
            elif image_file and auto:
                face, notes = editor.auto_mask_upload(image_file, label_set, size, role)
            else:
                half, kind = (image_file, "image") if image_file else (mask_file, "mask")
                editor.check_upload(half, kind, label_set, size, role)
                wanted = "its mask (or tick 'align and parse')" if kind == "image" else "the image"
                return gr.skip(), f"{role}: {Path(half).name} ok; upload {wanted} to use it", image_file, mask_file
        except ScadmError as err:
            message = _without_paths(str(err))
            gr.Warning(message, title="Upload refused")
            image_file, mask_file = (None, mask_file) if just == "image" else (image_file, None)
            return None, f"<span class='refused'>refused: {message}</span>", image_file, mask_file
        for note in notes:
            gr.Info(note)
        return face, face_line(role, face, image_file, mask_file), image_file, mask_file

    def target_outputs(face: Face | None, line: str, image_file=None, mask_file=None, example=None):
        if face is None:
            cleared: dict[str, Any] = {"background": None, "layers": [], "composite": None}
            return None, None, None, cleared, "", line, example, image_file, mask_file
        if isinstance(face, Face):
            return (
                face,
                face.labels,
                show_face(face),
                editor_value(face, face.labels),
                legend_html(face.labels, label_set),
                line,
                example,
                image_file,
                mask_file,
            )
        return (gr.skip(),) * 5 + (line, example, image_file, mask_file)

    def reference_outputs(face: Face | None, line: str, image_file=None, mask_file=None, example=None):
        view = show_face(face) if isinstance(face, Face) else (gr.skip() if face is not None else None)
        return face, view, line, example, image_file, mask_file

    def uploaded(role: str, image_file, mask_file, auto, just):
        face, line, image_file, mask_file = upload(role, image_file, mask_file, auto, just)
        example = None if face is None or isinstance(face, Face) else gr.skip()  # no longer an example
        return face, line, image_file, mask_file, example

    @_shows_errors
    def upload_target(image_file, mask_file, auto, just):
        return target_outputs(*uploaded("target", image_file, mask_file, auto, just))

    @_shows_errors
    def upload_reference(image_file, mask_file, auto, just):
        return reference_outputs(*uploaded("reference", image_file, mask_file, auto, just))

    def example_face(role: str, choice, new: bool):
        face, example = examples.face(choice, new)
        return face, face_line(role, face), None, None, example

    @_shows_errors
    def pick_target(choice, new=False):
        return target_outputs(*example_face("target", choice, new))

    @_shows_errors
    def pick_reference(choice, new=False):
        return reference_outputs(*example_face("reference", choice, new))

    @_shows_errors
    def apply_strokes(face: Face, labels: np.ndarray, painting: dict | None):
        if face is None:
            raise gr.Error("load a target first")
        labels = _painted(labels, painting)
        return labels, editor_value(face, labels), legend_html(labels, label_set)

    def _painted(labels: np.ndarray, painting: dict | None) -> np.ndarray:
        for layer in (painting or {}).get("layers") or []:
            labels = editor.labels_from_strokes(layer, labels, label_set)
        return labels

    @_shows_errors
    def reset_mask(face: Face):
        if face is None:
            raise gr.Error("load a target first")
        return face.labels, editor_value(face, face.labels), legend_html(face.labels, label_set)

    @_shows_errors
    def generate(
        target,
        reference,
        labels,
        painting,
        history,
        global_weight,
        guidance,
        sampler,
        steps,
        seed,
        lock,
        dtype,
        preserve,
        *part_values,
        progress=gr.Progress(track_tqdm=True),
    ):
        for role, face in (("target", target), ("reference", reference)):
            if face is None:
                raise gr.Error(
                    f"{role}: no valid face (an upload was refused); upload a valid image and mask, or pick an example",
                    title="Nothing to render",
                )
        sources, weights = part_values[: len(names)], part_values[len(names) :]
        parts = {
            n: PartChoice(s, float(w))
            for n, s, w in zip(_panel_order(names), sources, weights, strict=True)
            if s != "target"
        }
        seed = int(seed) if lock and seed is not None else random.randrange(MAX_SEED)
        render = INTERACTIVE.replace(
            steps=int(steps), guidance=float(guidance), sampler=sampler, seed=seed, dtype=dtype
        )
        settings = EditSettings(parts, float(global_weight), render, preserve=bool(preserve)).check(label_set)
        labels = _painted(labels, painting)
        missing = editor.missing_parts(settings, reference, labels, label_set)
        start = time.perf_counter()
        result = editor.render(models[render.dtype], target, reference, labels, settings, progress=True)
        seconds = time.perf_counter() - start
        folder = outdir / f"{int(time.time() * 1000)}-{seed}"
        paths = editor.write_bundle(
            folder, result, target, reference, labels, settings, label_set, model=models.replay_model
        )
        bundle = folder / "scadm-edit.zip"
        with zipfile.ZipFile(bundle, "w") as z:
            for p in paths.values():
                z.write(p, p.name)
        edits = (
            ", ".join(f"{n}<-{s}" + (f" {w:.2g}" if w < 1 else "") for n, (s, w) in settings.edited_parts().items())
            or "reconstruction"
        )
        # the exact PNG (no lossy re-encoding for the page): the page enlarges it, pixelated
        history = [(str(paths["result"]), f"seed {seed}: {edits}"), *(history or [])]
        files = [str(paths["result"]), str(paths["mask"]), str(paths["settings"]), str(bundle)]
        status = f"Rendered in {seconds:.1f} s ({render.label()}, seed {seed}): {edits}."
        if missing:
            warning = (
                f"The reference has no {' or '.join(missing)}: that style is invented, not the reference's "
                "(pick a reference that has it)."
            )
            gr.Warning(warning, title="Missing in the reference")
            status += f"\n\n**Warning:** {warning}"
        return str(paths["result"]), history, history, seed, files, status

    with gr.Blocks(title="scadm face editor") as demo:
        target_state, reference_state, mask_state = gr.State(), gr.State(), gr.State()
        history_state = gr.State([])
        gr.Markdown(
            f"**scadm face editor**: edit a face part by part with SCA-DM. Model `{Path(models.folder).name}`"
            f" ({size}x{size}, {pipe.device.type}); uploads are resized to {size}x{size}; masks are label PNGs "
            "(pixel = class) or CelebAMask-HQ colour PNGs.",
            elem_id="intro",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=280):
                target_view, target_example, target_new, target_image, target_mask, target_line = _face_column(
                    "target", examples, 0
                )
                reference_view, reference_example, reference_new, reference_image, reference_mask, reference_line = (
                    _face_column("reference", examples, 1)
                )
                auto_mask = gr.Checkbox(
                    examples.photos,
                    label="photos without a mask: align and parse them (parse extras; CelebAMask-HQ models)",
                    elem_id="auto-mask",
                )
            with gr.Column(scale=6, min_width=420, elem_id="parts"):
                with gr.Row():
                    all_buttons = {
                        s: gr.Button(f"all: {s}", size="sm", elem_id=f"all-{s}", min_width=60) for s in SOURCES
                    }
                sources, weights = [], []
                for name in _panel_order(names):
                    with gr.Row(elem_classes="part-row", elem_id=f"part-{name}"):
                        gr.HTML(
                            f'<span class="part-name">{name}</span>',
                            container=False,
                            padding=False,
                            elem_classes="part-name-box",
                            scale=0,
                            min_width=52,
                        )
                        sources.append(
                            gr.Radio(
                                list(SOURCES),
                                value="target",
                                label=name,
                                show_label=False,
                                container=False,
                                elem_id=f"src-{name}",
                                elem_classes="part-source",
                                scale=0,
                                min_width=258,
                            )
                        )
                        weights.append(
                            gr.Slider(
                                0,
                                1,
                                value=1,
                                step=0.05,
                                label=f"{name} strength",
                                show_label=False,
                                container=False,
                                buttons=[],
                                elem_id=f"w-{name}",
                                scale=1,
                                elem_classes="part-weight",
                                min_width=80,
                            )
                        )
            with gr.Column(scale=4, min_width=280):
                result_view = gr.Image(
                    label="result (the exact PNG)",
                    interactive=False,
                    elem_id="result",
                    height=320,
                    type="filepath",
                    format="png",
                    buttons=["download"],
                )
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                preserve = gr.Checkbox(
                    True,
                    label="keep the rest of the face: pixels outside the edited parts stay "
                    "the target's (inverts the target once, then each edit costs as usual)",
                    elem_id="preserve",
                )
                status = gr.Markdown("Load faces, choose parts, press Generate.", elem_id="status")
                downloads = gr.File(
                    label="downloads: result, mask, settings.json, bundle (replay with scadm edit)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        with gr.Row():
            with gr.Column(scale=3):
                painter = gr.ImageEditor(
                    type="numpy",
                    image_mode="RGBA",
                    sources=(),
                    transforms=(),
                    format="png",
                    brush=brush("hair"),
                    eraser=gr.Eraser(default_size=scale * 2),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["paint"]),
                    canvas_size=(size * scale, size * scale),
                    fixed_canvas=True,
                    label="mask: paint to reshape parts",
                    elem_id="painter",
                    height=560,
                )
            with gr.Column(scale=2):
                with gr.Row():
                    paint_class = gr.Dropdown(
                        names, value="hair", label="paint class (brush colour)", elem_id="paint-class"
                    )
                    apply_button = gr.Button("apply strokes to mask", elem_id="apply-strokes")
                    reset_button = gr.Button("reset mask", elem_id="reset-mask")
                legend = gr.HTML(elem_id="legend-box")
                global_weight = gr.Slider(0, 1, value=1, step=0.05, label="global strength", elem_id="global-weight")
                guidance = gr.Slider(1, 5, value=INTERACTIVE.guidance, step=0.1, label="guidance s", elem_id="guidance")
                with gr.Row():
                    sampler = gr.Dropdown(list(SAMPLERS), value=INTERACTIVE.sampler, label="sampler", elem_id="sampler")
                    steps = gr.Slider(1, 200, value=INTERACTIVE.steps, step=1, label="steps", elem_id="steps")
                with gr.Row():
                    seed = gr.Number(
                        INTERACTIVE.seed, label="seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed"
                    )
                    lock = gr.Checkbox(True, label="lock seed", elem_id="lock-seed")
                dtype = gr.Radio(
                    list(DTYPES), value=INTERACTIVE.dtype, label="precision (GPU)", visible=on_gpu, elem_id="dtype"
                )
        gallery = gr.Gallery(
            label="history (newest first)",
            columns=8,
            height=260,
            object_fit="contain",
            fit_columns=False,
            format="png",
            elem_id="history",
        )

        target_outs = [
            target_state,
            mask_state,
            target_view,
            painter,
            legend,
            target_line,
            target_example,
            target_image,
            target_mask,
        ]
        reference_outs = [
            reference_state,
            reference_view,
            reference_line,
            reference_example,
            reference_image,
            reference_mask,
        ]
        for button, just in ((target_image, "image"), (target_mask, "mask")):
            button.upload(
                functools.partial(upload_target, just=just), [target_image, target_mask, auto_mask], target_outs
            )
        for button, just in ((reference_image, "image"), (reference_mask, "mask")):
            button.upload(
                functools.partial(upload_reference, just=just),
                [reference_image, reference_mask, auto_mask],
                reference_outs,
            )
        target_example.input(pick_target, target_example, target_outs)
        target_new.click(functools.partial(pick_target, new=True), target_example, target_outs)
        reference_example.input(pick_reference, reference_example, reference_outs)
        reference_new.click(functools.partial(pick_reference, new=True), reference_example, reference_outs)
        paint_class.change(lambda n: gr.ImageEditor(brush=brush(n)), paint_class, painter)
        apply_button.click(apply_strokes, [target_state, mask_state, painter], [mask_state, painter, legend])
        reset_button.click(reset_mask, target_state, [mask_state, painter, legend])
        for s, button in all_buttons.items():
            button.click(lambda s=s: [s] * len(names), None, sources)
        generate_button.click(
            generate,
            [
                target_state,
                reference_state,
                mask_state,
                painter,
                history_state,
                global_weight,
                guidance,
                sampler,
                steps,
                seed,
                lock,
                dtype,
                preserve,
                *sources,
                *weights,
            ],
            [result_view, gallery, history_state, seed, downloads, status],
        )
        demo.load(pick_target, target_example, target_outs).then(pick_reference, reference_example, reference_outs)
    return demo


def launch(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860, device: str = "auto") -> None:
    """Serve the editor until interrupted (`scadm serve`)."""
    device = str(resolve_device(device, "--device"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = build_app(Models(resolve_model(model), device))
    demo.queue(default_concurrency_limit=1, max_size=64)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # no web-font download
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size="20mb",
        show_error=True,
        allowed_paths=[],
        theme=theme,
        css=CSS,
        ssr_mode=False,
        inbrowser=False,
        quiet=False,
    )
