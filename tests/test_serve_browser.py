"""End to end: headless Chromium drives `scadm serve` (the shipped model) on localhost.

Upload a target and its mask, render it, swap the hair to the reference's, paint a mask stroke,
render again, and check the images and the downloaded settings. Screenshots go to the test's tmp
folder, and to $SCADM_SCREENSHOT_DIR when set (how docs/serve-*.png are made):
    SCADM_SCREENSHOT_DIR=docs .venv/bin/python -m pytest tests/test_serve_browser.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed: pip install -e '.[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")

from scadm.data.synthetic import render_face  # noqa: E402
from scadm.io import save_image, save_mask  # noqa: E402
from scadm.labels import CELEBAMASK_HQ  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                          "(apt-get install chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HAIR = CELEBAMASK_HQ.index("hair")
HAT = CELEBAMASK_HQ.index("hat")
TIMEOUT_MS = 40_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`scadm serve` in a subprocess, as a user starts it; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scadm.cli", "serve", "--port", str(port), "--device", "cpu"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"scadm serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture()
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1500})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        page.wait_for_selector("#legend")
        yield page
        browser.close()


def _screenshot(page, name: str, folder: Path) -> None:
    page.screenshot(path=folder / name, full_page=True)
    if os.environ.get("SCADM_SCREENSHOT_DIR"):
        shutil.copy(folder / name, Path(os.environ["SCADM_SCREENSHOT_DIR"]) / name)


def _fetch(page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok, f"GET {url}: {response.status}"
    return response.body()


def _result(page, previous: str | None) -> tuple[np.ndarray, str]:
    """Wait for a new result image; return it at the model's 64 px and its URL."""
    page.wait_for_function("prev => { const i = document.querySelector('#result img');"
                           " return i && i.src && i.src !== prev; }", arg=previous)
    src = page.get_attribute("#result img", "src")
    image = Image.open(io.BytesIO(_fetch(page, src))).convert("RGB")
    return np.asarray(image.resize((64, 64), Image.Resampling.NEAREST)).astype(np.float64), src


def _download(page, name: str) -> bytes:
    link = page.locator(f"#downloads tr:has(td[aria-label='{name}']) a").first
    link.wait_for()
    return _fetch(page, link.get_attribute("href"))


def _generate(page, previous):
    page.click("#generate")
    image, src = _result(page, previous)
    page.wait_for_selector("#status:has-text('Rendered')")
    return image, src


def test_upload_swap_paint_generate(page, tmp_path):
    face = render_face(123_456, 64)
    save_image(face.image, tmp_path / "target.png")
    save_mask(face.labels, tmp_path / "target_mask.png", CELEBAMASK_HQ)
    page.set_input_files("#target-image input[type=file]", str(tmp_path / "target.png"))
    page.set_input_files("#target-mask input[type=file]", str(tmp_path / "target_mask.png"))
    page.wait_for_selector("#status:has-text('uploaded target')")
    _screenshot(page, "serve-editor.png", tmp_path)

    recon, src = _generate(page, None)  # every part from the target, seed locked at 0
    page.click("#src-hair label:has-text('reference')")
    swapped, src = _generate(page, src)
    _screenshot(page, "serve-swap.png", tmp_path)
    settings = json.loads(_download(page, "settings.json"))
    assert settings["parts"] == {"hair": {"source": "reference", "weight": 1.0}}
    assert settings["seed"] == 0
    change = np.abs(swapped - recon).mean(-1)
    hair = face.labels == HAIR
    print(f"hair swap: change inside {change[hair].mean():.1f}, outside {change[~hair].mean():.1f}")
    assert change[hair].mean() > 1.5 * change[~hair].mean(), "the hair swap should change the hair most"

    # paint a hat: a stroke across the top of the head, then bake it into the mask
    page.click("#paint-class input")
    page.click("ul[role=listbox] li:has-text('hat')")
    page.wait_for_timeout(1500)  # the canvas re-initialises with the new brush colour
    box = page.locator("#painter canvas").first.bounding_box()
    y = box["y"] + box["height"] * 0.3
    page.mouse.move(box["x"] + box["width"] * 0.35, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, y, steps=20)
    page.mouse.up()
    page.click("#apply-strokes")
    page.wait_for_selector("#legend .present:has-text('hat')")
    painted, src = _generate(page, src)
    _screenshot(page, "serve-paint.png", tmp_path)
    mask = np.asarray(Image.open(io.BytesIO(_download(page, "edited_mask.png"))))
    assert (face.labels == HAT).sum() == 0 and (mask == HAT).sum() > 20, "the stroke should add hat pixels"
    assert ((mask != face.labels) == (mask == HAT)).all(), "only the stroke should change the mask"
    assert np.abs(painted - swapped).mean(-1)[mask == HAT].mean() > 5, "the new hat should show in the image"

    # a malformed upload: a message in the page, and the server keeps serving
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    page.set_input_files("#reference-image input[type=file]", str(tmp_path / "corrupt.png"))
    page.set_input_files("#reference-mask input[type=file]", str(tmp_path / "target_mask.png"))
    page.wait_for_selector("text=not an image or corrupt")
    page.click("#src-hair label:has-text('target')")
    _generate(page, src)  # a new result (hair back to the target's): the server survived
