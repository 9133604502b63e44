"""The gradio page of `scadm serve`: the layout (`layout`) connected to the callbacks (`callbacks`).

Safe by default: binds 127.0.0.1, takes files only as uploads (never a server path), caps
uploads at 20 MB, turns every bad request into a message in the page, and queues requests so
concurrent users wait their turn instead of sharing the model mid-render. Every callback works on
the session's own state (gr.State), so users never see each other's faces.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from scadm.serve import environment  # noqa: F401  (sets gradio's environment: before gradio is imported)

# isort: split

import gradio as gr

from scadm.serve.callbacks import Callbacks, Models
from scadm.serve.examples import Examples
from scadm.serve.layout import CSS, Page, build_page
from scadm.settings import resolve_device
from scadm.shipped import model_domain, resolve_model


def build_app(models: Models) -> gr.Blocks:
    """The editor's page for `models` (not yet launched)."""
    pipe = models.base
    examples = Examples(model_domain(models.folder), pipe.image_size, pipe.label_set)
    callbacks = Callbacks(models, examples)
    with gr.Blocks(title="scadm face editor") as demo:
        page = build_page(pipe.label_set, pipe.image_size, examples, Path(models.folder).name, pipe.device.type)
        _connect(demo, page, callbacks)
    return demo


def _connect(demo: gr.Blocks, page: Page, callbacks: Callbacks) -> None:
    """Each event of the page to its callback, with the inputs it reads and the outputs it answers
    (a role's outputs in the order `Callbacks` gives)."""
    mask_outputs = [page.mask_state, page.painter, page.legend]
    outputs, pick = {}, {}
    for role, face in page.faces.items():
        shown = [face.state, face.view, *(mask_outputs if role == "target" else [])]
        outputs[role] = [*shown, face.line, face.picker, face.image, face.mask]
        pick[role] = functools.partial(callbacks.pick, role)
        for button, just in ((face.image, "image"), (face.mask, "mask")):
            upload = functools.partial(callbacks.upload, role, just=just)
            button.upload(upload, [face.image, face.mask, page.auto_mask], outputs[role])
        face.picker.input(pick[role], face.picker, outputs[role])
        face.new.click(functools.partial(pick[role], new=True), face.picker, outputs[role])
    target, reference = page.faces["target"], page.faces["reference"]
    page.apply_button.click(callbacks.apply_strokes, [target.state, page.mask_state, page.painter], mask_outputs)
    page.reset_button.click(callbacks.reset_mask, target.state, mask_outputs)
    page.generate_button.click(
        callbacks.generate,
        [
            target.state,
            reference.state,
            page.mask_state,
            page.painter,
            page.history_state,
            *page.options.as_list(),
            *page.sources,
            *page.weights,
        ],
        [page.result_view, page.gallery, page.history_state, page.options.seed, page.downloads, page.status],
        show_progress_on=page.result_view,  # one bar, where the result will be (not over every output)
    )
    demo.load(pick["target"], target.picker, outputs["target"]).then(
        pick["reference"], reference.picker, outputs["reference"]
    )


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
