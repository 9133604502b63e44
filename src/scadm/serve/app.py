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

import functools  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from scadm.demo import DEMO_MODEL  # noqa: E402
from scadm.editing import SOURCES, EditSettings, PartChoice  # noqa: E402
from scadm.errors import ScadmError  # noqa: E402
from scadm.io import mask_to_rgb  # noqa: E402
from scadm.pipeline import SCADMPipeline  # noqa: E402
from scadm.serve import editor  # noqa: E402
from scadm.serve.editor import Face  # noqa: E402
from scadm.settings import DTYPES, INTERACTIVE, SAMPLERS, RenderSettings, resolve_device  # noqa: E402

log = logging.getLogger("scadm.serve")
EXAMPLES = 8
MAX_SEED = 2**31 - 1
#: the parts people edit most come first in the parts panel
FIRST_PARTS = ("hair", "skin", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "mouth", "nose")
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
CSS = """
.legend {display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 13px}
.legend span.sw {display: inline-block; width: 12px; height: 12px; border: 1px solid #888; margin-right: 4px;
                 vertical-align: -1px}
.legend .absent {opacity: 0.45}
#parts {max-height: 620px; overflow-y: auto; flex-wrap: nowrap}
#parts .part-row {flex-shrink: 0; align-items: center}
"""


class Models:
    """The pipeline in each precision, loaded on first use (casting one in place would lose bits)."""

    def __init__(self, folder: str | Path, device: str):
        self.folder, self.device = str(folder), device
        self._pipes = {}

    def __getitem__(self, dtype: str) -> SCADMPipeline:
        if dtype not in self._pipes:
            self._pipes[dtype] = SCADMPipeline.from_pretrained(self.folder, device=self.device,
                                                               dtype=RenderSettings(dtype=dtype).torch_dtype)
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
            raise gr.Error(str(err), title="Input problem") from None
        except Exception as err:  # noqa: BLE001 - the server must survive any request
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(err).__name__}); details are in the server log") from None
    return wrapper


def legend_html(labels: np.ndarray, label_set) -> str:
    """Class colours with the share of the mask each class covers; absent classes greyed."""
    counts = np.bincount(labels.reshape(-1), minlength=label_set.num_classes)
    items = []
    for name, colour, n in zip(label_set.names, label_set.palette, counts):
        share = f"{100 * n / labels.size:.1f}%" if n else "absent"
        items.append(f'<span class="{"present" if n else "absent"}"><span class="sw" '
                     f'style="background: rgb{tuple(colour)}"></span>{name} <small>{share}</small></span>')
    return f'<div class="legend" id="legend">{"".join(items)}</div>'


def _panel_order(names: list[str]) -> list[str]:
    return [n for n in FIRST_PARTS if n in names] + [n for n in names if n not in FIRST_PARTS]


def _rgb(colour) -> str:
    return f"rgb({colour[0]}, {colour[1]}, {colour[2]})"


def _face_column(role: str, example: int):
    """The input column of the target or the reference: its view, example picker and uploads."""
    with gr.Column(scale=1):
        gr.Markdown(f"### {role.capitalize()}")
        view = gr.Image(label=f"{role} | mask", interactive=False, elem_id=f"{role}-view", height=180)
        with gr.Row():
            picker = gr.Dropdown([f"face {i}" for i in range(EXAMPLES)], value=f"face {example}",
                                 label="example", elem_id=f"{role}-example")
            new = gr.Button("new random face", elem_id=f"{role}-new")
        with gr.Row():
            image = gr.File(label="upload image", file_types=UPLOAD_TYPES, elem_id=f"{role}-image")
            mask = gr.File(label="upload mask", file_types=[".png"], elem_id=f"{role}-mask")
    return view, picker, new, image, mask


def build_app(models: Models) -> gr.Blocks:
    pipe = models.base
    label_set, size = pipe.label_set, pipe.image_size
    scale = editor.display_scale(size)
    names = list(label_set.names)
    colours = [_rgb(c) for c in label_set.palette]
    outdir = Path(tempfile.mkdtemp(prefix="scadm-serve-"))
    on_gpu = pipe.device.type == "cuda"

    def brush(name: str) -> gr.Brush:
        return gr.Brush(colors=colours, default_color=colours[names.index(name)], color_mode="fixed",
                        default_size=max(2, scale * 3 // 2))

    def editor_value(face: Face, labels: np.ndarray) -> dict:
        return {"background": editor.overlay_picture(face, labels, label_set, scale), "layers": [], "composite": None}

    def show_face(face: Face):
        """The face and its mask side by side, enlarged for the page."""
        return np.concatenate([face.image, mask_to_rgb(face.labels, label_set)], axis=1).repeat(4, 0).repeat(4, 1)

    def target_outputs(face: Face, notes: list[str]):
        for note in notes:
            gr.Info(note)
        return (face, face.labels, show_face(face), editor_value(face, face.labels),
                legend_html(face.labels, label_set), f"Target: {face.name}, {size}x{size}.")

    @_shows_errors
    def load_target(image_file, mask_file, auto):
        if image_file and not mask_file and auto:
            return target_outputs(*editor.auto_mask_upload(image_file, label_set, size, "target"))
        if not image_file or not mask_file:
            return (gr.skip(),) * 5 + ("Target: upload both the image and its mask.",)
        return target_outputs(*editor.load_upload(image_file, mask_file, label_set, size, "target"))

    @_shows_errors
    def load_reference(image_file, mask_file, auto):
        if image_file and not mask_file and auto:
            face, notes = editor.auto_mask_upload(image_file, label_set, size, "reference")
        elif not image_file or not mask_file:
            return gr.skip(), gr.skip(), "Reference: upload both the image and its mask."
        else:
            face, notes = editor.load_upload(image_file, mask_file, label_set, size, "reference")
        for note in notes:
            gr.Info(note)
        return face, show_face(face), f"Reference: {face.name}."

    def example_seed(choice: str | None, new: bool) -> int:
        return random.randrange(EXAMPLES, 10**6) if new else int(str(choice).split()[-1])

    @_shows_errors
    def pick_target(choice, new=False):
        return target_outputs(editor.procedural_face(example_seed(choice, new), size), [])

    @_shows_errors
    def pick_reference(choice, new=False):
        face = editor.procedural_face(example_seed(choice, new), size)
        return face, show_face(face), f"Reference: {face.name}."

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
    def generate(target, reference, labels, painting, history, global_weight, guidance, sampler, steps, seed,
                 lock, dtype, preserve, *part_values, progress=gr.Progress(track_tqdm=True)):
        if target is None:
            raise gr.Error("load a target first")
        sources, weights = part_values[:len(names)], part_values[len(names):]
        parts = {n: PartChoice(s, float(w)) for n, s, w in zip(_panel_order(names), sources, weights)
                 if s != "target"}
        seed = int(seed) if lock and seed is not None else random.randrange(MAX_SEED)
        render = INTERACTIVE.replace(steps=int(steps), guidance=float(guidance), sampler=sampler, seed=seed,
                                     dtype=dtype)
        settings = EditSettings(parts, float(global_weight), render, preserve=bool(preserve)).check(label_set)
        labels = _painted(labels, painting)
        start = time.perf_counter()
        result = editor.render(models[render.dtype], target, reference, labels, settings, progress=True)
        seconds = time.perf_counter() - start
        folder = outdir / f"{int(time.time() * 1000)}-{seed}"
        paths = editor.write_bundle(folder, result, target, reference, labels, settings, label_set,
                                    model=models.folder)
        bundle = folder / "scadm-edit.zip"
        with zipfile.ZipFile(bundle, "w") as z:
            for p in paths.values():
                z.write(p, p.name)
        edits = ", ".join(f"{n}<-{s}" + (f" {w:.2g}" if w < 1 else "")
                          for n, (s, w) in settings.edited_parts().items()) or "reconstruction"
        caption = f"seed {seed}: {edits}"
        history = [(result.repeat(4, 0).repeat(4, 1), caption)] + list(history or [])
        files = [str(paths["result"]), str(paths["mask"]), str(paths["settings"]), str(bundle)]
        status = f"Rendered in {seconds:.1f} s ({render.label()}, seed {seed}): {edits}."
        return result.repeat(4, 0).repeat(4, 1), history, history, seed, files, status

    with gr.Blocks(title="scadm face editor") as demo:
        target_state, reference_state, mask_state = gr.State(), gr.State(), gr.State()
        history_state = gr.State([])
        gr.Markdown(f"## scadm face editor\nEdit a face part by part with SCA-DM. Model: `{Path(models.folder).name}`"
                    f" ({size}x{size}, {pipe.device.type}). Uploads are resized to {size}x{size}; masks are label "
                    "PNGs (pixel = class) or CelebAMask-HQ colour PNGs.")
        with gr.Row():
            target_view, target_example, target_new, target_image, target_mask = _face_column("target", 0)
            reference_view, reference_example, reference_new, reference_image, reference_mask = \
                _face_column("reference", 1)
            with gr.Column(scale=1):
                gr.Markdown("### Result")
                result_view = gr.Image(label="result", interactive=False, elem_id="result", height=256)
                status = gr.Markdown("Load faces, choose parts, press Generate.", elem_id="status")
                auto_mask = gr.Checkbox(False, label="photos without a mask: align and parse them (needs the "
                                        "parse extras; CelebAMask-HQ models)", elem_id="auto-mask")
                downloads = gr.File(label="download: result, mask, settings.json, bundle (replay with scadm edit)",
                                    file_count="multiple", interactive=False, elem_id="downloads")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("### Mask: paint to reshape parts")
                painter = gr.ImageEditor(type="numpy", image_mode="RGBA", sources=(), transforms=(), format="png",
                                         brush=brush("hair"), eraser=gr.Eraser(default_size=scale * 2),
                                         layers=gr.LayerOptions(allow_additional_layers=False, layers=["paint"]),
                                         canvas_size=(size * scale, size * scale), fixed_canvas=True,
                                         show_label=False, elem_id="painter", height=600)
                with gr.Row():
                    paint_class = gr.Dropdown(names, value="hair", label="paint class (brush colour)",
                                              elem_id="paint-class")
                    apply_button = gr.Button("apply strokes to mask", elem_id="apply-strokes")
                    reset_button = gr.Button("reset mask", elem_id="reset-mask")
                legend = gr.HTML(elem_id="legend-box")
            with gr.Column(scale=3):
                gr.Markdown("### Parts: style source and strength")
                with gr.Row():
                    all_buttons = {s: gr.Button(f"all: {s}", size="sm", elem_id=f"all-{s}") for s in SOURCES}
                with gr.Column(elem_id="parts"):
                    sources, weights = [], []
                    for name in _panel_order(names):
                        with gr.Row(elem_classes="part-row"):
                            sources.append(gr.Radio(list(SOURCES), value="target", label=name, elem_id=f"src-{name}",
                                                    scale=3))
                            weights.append(gr.Slider(0, 1, value=1, step=0.05, label="strength",
                                                     elem_id=f"w-{name}", scale=2))
            with gr.Column(scale=2):
                gr.Markdown("### Render")
                global_weight = gr.Slider(0, 1, value=1, step=0.05, label="global strength", elem_id="global-weight")
                guidance = gr.Slider(1, 5, value=INTERACTIVE.guidance, step=0.1, label="guidance s", elem_id="guidance")
                sampler = gr.Dropdown(list(SAMPLERS), value=INTERACTIVE.sampler, label="sampler", elem_id="sampler")
                steps = gr.Slider(1, 200, value=INTERACTIVE.steps, step=1, label="steps", elem_id="steps")
                with gr.Row():
                    seed = gr.Number(INTERACTIVE.seed, label="seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    lock = gr.Checkbox(True, label="lock seed", elem_id="lock-seed")
                dtype = gr.Radio(list(DTYPES), value=INTERACTIVE.dtype, label="precision (GPU)", visible=on_gpu, elem_id="dtype")
                preserve = gr.Checkbox(True, label="keep the rest of the face: pixels outside the edited parts stay "
                                       "the target's (inverts the target once, then each edit costs as usual)",
                                       elem_id="preserve")
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
        gallery = gr.Gallery(label="history (newest first)", columns=10, height=220, object_fit="contain", fit_columns=False,
                             elem_id="history")

        target_outs = [target_state, mask_state, target_view, painter, legend, status]
        reference_outs = [reference_state, reference_view, status]
        for files in (target_image, target_mask):
            files.change(load_target, [target_image, target_mask, auto_mask], target_outs)
        for files in (reference_image, reference_mask):
            files.change(load_reference, [reference_image, reference_mask, auto_mask], reference_outs)
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
            [target_state, reference_state, mask_state, painter, history_state, global_weight, guidance, sampler,
             steps, seed, lock, dtype, preserve, *sources, *weights],
            [result_view, gallery, history_state, seed, downloads, status])
        demo.load(pick_target, target_example, target_outs).then(pick_reference, reference_example, reference_outs)
    return demo


def launch(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, device: str = "auto") -> None:
    """Serve the editor until interrupted (`scadm serve`)."""
    device = str(resolve_device(device, "--device"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = build_app(Models(model or DEMO_MODEL, device))
    demo.queue(default_concurrency_limit=1, max_size=64)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font download
    demo.launch(server_name=host, server_port=port, share=False, max_file_size="20mb", show_error=True,
                allowed_paths=[], theme=theme, css=CSS, ssr_mode=False, inbrowser=False, quiet=False)
