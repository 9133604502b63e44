"""The page's layout: its components, where they sit, and the events that only change the page
(the brush colour, "all: source"); `scadm.serve.app` connects the rest to the callbacks.

Laid out for a laptop screen (1280x800): inputs, parts and the result with Generate side by side at
the top; the mask painter, render options and history below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scadm.serve import environment  # noqa: F401  (sets gradio's environment: before gradio is imported)

# isort: split

import gradio as gr

from scadm.editing import SOURCES
from scadm.labels import LabelSet
from scadm.serve import editor
from scadm.serve.callbacks import PAGE_SEED_MAX, RenderOptions
from scadm.serve.examples import Examples
from scadm.serve.views import css_colour, panel_order
from scadm.settings import DTYPES, INTERACTIVE, SAMPLERS

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
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


@dataclass
class FaceColumn:
    """A role's face (the session's own, gr.State) and its controls."""

    state: gr.State
    view: gr.Image
    picker: gr.Dropdown
    new: gr.Button
    image: gr.UploadButton
    mask: gr.UploadButton
    line: gr.Markdown


@dataclass
class Page:
    """The components the callbacks read or answer."""

    faces: dict[str, FaceColumn]  # "target", "reference"
    auto_mask: gr.Checkbox
    sources: list[gr.Radio]  # per part, in panel order
    weights: list[gr.Slider]
    options: RenderOptions[Any]
    mask_state: gr.State
    history_state: gr.State
    painter: gr.ImageEditor
    apply_button: gr.Button
    reset_button: gr.Button
    legend: gr.HTML
    generate_button: gr.Button
    result_view: gr.Image
    status: gr.Markdown
    downloads: gr.File
    gallery: gr.Gallery


def brush(label_set: LabelSet, scale: int, name: str) -> gr.Brush:
    """A brush in class `name`'s colour, drawing only in class colours."""
    colours: list[str | tuple[str, float]] = [css_colour(c) for c in label_set.palette]
    return gr.Brush(
        colors=colours,
        default_color=colours[label_set.names.index(name)],
        color_mode="fixed",
        default_size=max(2, scale * 3 // 2),
    )


def _face_column(role: str, examples: Examples, index: int, scale: int = 4) -> FaceColumn:
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
    return FaceColumn(gr.State(), view, picker, new, image, mask, line)


def _parts_panel(names: list[str]) -> tuple[list[gr.Radio], list[gr.Slider]]:
    """Buttons that set every part's source at once, then a row per part: its name, its style
    source and its strength."""
    with gr.Row():
        all_buttons = {s: gr.Button(f"all: {s}", size="sm", elem_id=f"all-{s}", min_width=60) for s in SOURCES}
    sources, weights = [], []
    for name in panel_order(names):
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
    for s, button in all_buttons.items():
        button.click(lambda s=s: [s] * len(names), None, sources)
    return sources, weights


def build_page(label_set: LabelSet, size: int, examples: Examples, model: str, device: str) -> Page:
    """Lay out the page inside the current gr.Blocks, for a model of `size` px named `model`
    running on `device` ("cpu", "cuda")."""
    names = list(label_set.names)
    scale = editor.display_scale(size)
    options: dict[str, Any] = {}  # RenderOptions' components, where they sit
    mask_state, history_state = gr.State(), gr.State([])
    gr.Markdown(
        f"**scadm face editor**: edit a face part by part with SCA-DM. Model `{model}`"
        f" ({size}x{size}, {device}); uploads are resized to {size}x{size}; masks are label PNGs "
        "(pixel = class) or CelebAMask-HQ colour PNGs.",
        elem_id="intro",
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            faces = {role: _face_column(role, examples, i) for i, role in enumerate(("target", "reference"))}
            auto_mask = gr.Checkbox(
                examples.photos,
                label="photos without a mask: align and parse them (parse extras; CelebAMask-HQ models)",
                elem_id="auto-mask",
            )
        with gr.Column(scale=6, min_width=420, elem_id="parts"):
            sources, weights = _parts_panel(names)
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
            options["preserve"] = gr.Checkbox(
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
                brush=brush(label_set, scale, "hair"),
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
            options["global_weight"] = gr.Slider(
                0, 1, value=1, step=0.05, label="global strength", elem_id="global-weight"
            )
            options["guidance"] = gr.Slider(
                1, 5, value=INTERACTIVE.guidance, step=0.1, label="guidance s", elem_id="guidance"
            )
            with gr.Row():
                options["sampler"] = gr.Dropdown(
                    list(SAMPLERS), value=INTERACTIVE.sampler, label="sampler", elem_id="sampler"
                )
                options["steps"] = gr.Slider(1, 200, value=INTERACTIVE.steps, step=1, label="steps", elem_id="steps")
            with gr.Row():
                options["seed"] = gr.Number(
                    INTERACTIVE.seed, label="seed", precision=0, minimum=0, maximum=PAGE_SEED_MAX, elem_id="seed"
                )
                options["lock"] = gr.Checkbox(True, label="lock seed", elem_id="lock-seed")
            options["dtype"] = gr.Radio(
                list(DTYPES),
                value=INTERACTIVE.dtype,
                label="precision (GPU)",
                visible=device == "cuda",
                elem_id="dtype",
            )
    paint_class.change(lambda n: gr.ImageEditor(brush=brush(label_set, scale, n)), paint_class, painter)
    gallery = gr.Gallery(
        label="history (newest first)",
        columns=8,
        height=260,
        object_fit="contain",
        fit_columns=False,
        format="png",
        elem_id="history",
    )
    return Page(
        faces=faces,
        auto_mask=auto_mask,
        sources=sources,
        weights=weights,
        options=RenderOptions(**options),
        mask_state=mask_state,
        history_state=history_state,
        painter=painter,
        apply_button=apply_button,
        reset_button=reset_button,
        legend=legend,
        generate_button=generate_button,
        result_view=result_view,
        status=status,
        downloads=downloads,
        gallery=gallery,
    )
