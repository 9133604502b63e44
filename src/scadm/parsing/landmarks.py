"""Eye and mouth landmarks of the main face in a photo, for the FFHQ-style crop (align.py).

Backend: dlib (`dlib-bin`, a prebuilt wheel) with its HOG face detector and the 68-point shape
predictor from `face-recognition-models` (iBUG 300-W annotations: non-commercial). MediaPipe was
the other candidate; its last release that bundles models pins numpy < 2 and pulls OpenCV and
JAX, so scadm uses dlib. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from scadm.errors import InputError

LANDMARK_BACKENDS = ("dlib",)
PREDICTOR_PACKAGE = "face_recognition_models"
PREDICTOR_FILE = "models/shape_predictor_68_face_landmarks.dat"
DETECT_MAX_SIDE = 1024  # the HOG detector runs on a copy at most this large (speed)
# 68-point scheme (iBUG 300-W): 36-41 and 42-47 outline the eyes, 48 and 54 are the mouth corners.
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


@dataclass(frozen=True)
class FaceLandmarks:
    """Image-space (x, y) points; left/right as seen in the image."""

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray


def detect_landmarks(image: np.ndarray, backend: str = "dlib", name: str = "image") -> FaceLandmarks:
    """Landmarks of the largest face in an (H, W, 3) uint8 RGB image; InputError naming `name`
    if there is none."""
    if backend not in LANDMARK_BACKENDS:
        raise InputError(f"landmarks: unknown backend {backend!r}; choose {', '.join(LANDMARK_BACKENDS)}")
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    dlib, detector, predictor = _dlib_models()
    scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
    small = image if scale == 1.0 else _resize(image, scale)
    boxes = detector(small, 1)  # upsample once: finds faces down to about 40 px
    if len(boxes) == 0:
        raise InputError(f"{name}: no face found (the detector needs a roughly frontal face at least ~40 px wide)")
    box = max(boxes, key=lambda b: b.width() * b.height())
    corners = (box.left(), box.top(), box.right(), box.bottom())
    box = dlib.rectangle(*(round(v / scale) for v in corners))
    shape = predictor(image, box)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return FaceLandmarks(
        eye_left=points[LEFT_EYE].mean(0),
        eye_right=points[RIGHT_EYE].mean(0),
        mouth_left=points[MOUTH_LEFT],
        mouth_right=points[MOUTH_RIGHT],
    )


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


@lru_cache(maxsize=1)
def _dlib_models():
    try:
        import dlib
    except ImportError:
        from scadm.parsing.weights import PARSE_EXTRAS_HINT  # here: that module imports torch

        raise InputError(f"face landmarks need dlib; {PARSE_EXTRAS_HINT}") from None
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_predictor_path()))


def _predictor_path() -> Path:
    spec = importlib.util.find_spec(PREDICTOR_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PREDICTOR_FILE
        if path.is_file():
            return path
    from scadm.parsing.weights import PARSE_EXTRAS_HINT  # here: that module imports torch

    raise InputError(f"the dlib 68-point landmark model is not installed; {PARSE_EXTRAS_HINT}")
