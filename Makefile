PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/ham10000-200x150
ARTIFACTS ?= artifacts

.PHONY: install test lint format demo pipeline serve

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e '.[dev]'

test:
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Quick start: environment, the quick pipeline when artifacts are missing, then the service.
demo: install
	@test -f $(DATA)/HAM10000_metadata.csv || test -f $(DATA)/HAM10000_metadata || { \
	  echo "No HAM10000 copy at DATA=$(DATA). Point DATA at one, or fetch it:"; \
	  echo "  $(PY) -m training.download --out data/ham10000 && make demo DATA=data/ham10000"; \
	  exit 1; }
	$(PY) -m training.pipeline --data $(DATA) --out $(ARTIFACTS) --profile quick
	@echo ""
	@echo "Serving on http://127.0.0.1:8000 (docs at /docs). Try:"
	@echo "  curl -F file=@$$(ls $(DATA)/images/*.jpg 2>/dev/null | head -1) http://127.0.0.1:8000/detect"
	@echo "  curl -H 'Accept: image/png' 'http://127.0.0.1:8000/generate?n=1&seed=7' -o lesion.png"
	DERMAFAKE_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m app

pipeline:
	$(PY) -m training.pipeline --data $(DATA) --out $(ARTIFACTS) --profile $(or $(PROFILE),quick)

serve:
	DERMAFAKE_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m app
