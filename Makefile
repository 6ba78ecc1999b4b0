# The README's two commands: `make run` (the default experiment on real offline data) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: env lock lint data docs test test-all run run-segmentation run-detection

env:  ## build or reuse the pinned virtualenv (cached outside the checkout) and link it as .venv
	scripts/setup-env

lock:  ## re-resolve requirements.in into constraints.txt
	scripts/setup-env --lock

lint: env  ## ruff (lint + format check) and mypy (the ops contract; see pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

data: env  ## the real offline datasets (Debian Fashion-MNIST, laspy tiles, elecdemand, skimage, scenes)
	scripts/fetch-data fashion-mnist laspy elecdemand skimage scenes

docs: env  ## the documentation site: generated tables checked, then mkdocs build --strict into site/
	$(PY) -m metamixer.lab.results readme README.md results/records --check
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

test: lint data docs  ## lint, format check, the docs build and the default (non-slow) test suite
	$(PY) -m pytest -q

test-all: lint data docs  ## every test, the slow ones included
	$(PY) -m pytest -q -m ''

run: env  ## train and test a small FFNet on Fashion-MNIST (installs the Debian dataset if missing)
	scripts/fetch-data fashion-mnist
	$(PY) -m metamixer.vision fit --config experiments/vision/fashion_mnist.yaml

run-segmentation: env  ## UperNet on a small FFNet, composed scenes (ADE20K layout), CPU
	scripts/fetch-data scenes
	$(PY) -m metamixer.vision.segmentation fit --config experiments/vision/segmentation/scenes_upernet.yaml

run-detection: env  ## Mask R-CNN on a small FFNet, composed scenes (COCO layout), CPU
	scripts/fetch-data scenes
	$(PY) -m metamixer.vision.detection fit --config experiments/vision/detection/scenes_mask_rcnn.yaml
