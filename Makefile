PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Written once the project is installed into $(VENV); every target that runs code depends on it,
# so each works on its own from a fresh clone (the environment is made when missing).
STAMP ?= $(VENV)/.dermafake-installed
DATA ?= data/ham10000
ARTIFACTS ?= artifacts
PROFILE ?= quick
# DOWNLOAD=1: fetch HAM10000 into DATA and the ImageNet VGG16 weights when missing.
DOWNLOAD_FLAG := $(if $(filter 1 yes true,$(DOWNLOAD)),--download,)

.PHONY: install test lint format demo pipeline check rehearse serve soak browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Quick start: environment, the quick pipeline (stages already done are skipped), then the
# service. The pipeline's preflight stops in seconds, saying how to fix it, when DATA is missing.
demo: $(STAMP)
	$(PY) -m training.pipeline --data $(DATA) --out $(ARTIFACTS) --profile quick $(DOWNLOAD_FLAG)
	@echo ""
	@echo "Serving on http://127.0.0.1:8000 (docs at /docs). Try:"
	@echo "  curl -F file=@$$(ls $(DATA)/images/*.jpg $(DATA)/HAM10000_images_part_1/*.jpg 2>/dev/null | head -1) http://127.0.0.1:8000/detect"
	@echo "  curl -H 'Accept: image/png' 'http://127.0.0.1:8000/generate?n=1&seed=7' -o lesion.png"
	DERMAFAKE_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m app

pipeline: $(STAMP)
	$(PY) -m training.pipeline --data $(DATA) --out $(ARTIFACTS) --profile $(PROFILE) $(DOWNLOAD_FLAG)

# Only the pipeline's preflight: data, weights, output, device, disk.
check: $(STAMP)
	$(PY) -m training.pipeline --data $(DATA) --out $(ARTIFACTS) --profile $(PROFILE) --check

# The paper profile's whole path, shrunk, on the CPU, from a local stand-in of the downloads.
rehearse: $(STAMP)
	$(PY) -m pytest -q tests/training/test_rehearsal.py

serve: $(STAMP)
	DERMAFAKE_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m app

# A few minutes of mixed valid and hostile traffic against a real server (not part of `make test`):
# fails on any server error, lost request or memory growth. Figures: docs/BENCHMARKS.md.
IMAGES ?= $(DATA)
SOAK_SECONDS ?= 180
soak: $(STAMP)
	$(PY) -m bench.soak --artifacts $(ARTIFACTS) --images $(IMAGES) --seconds $(SOAK_SECONDS) \
	  --out bench/results/soak.json

# The page's tests drive Debian's chromium through chromedriver (tests/app/test_page.py); they
# skip, saying why, where neither is installed. Needs root and apt.
browser:
	@command -v chromedriver >/dev/null && command -v chromium >/dev/null || { \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
