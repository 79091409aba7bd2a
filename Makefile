PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean obd-sample

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recs demo

# The Open Bandit Dataset sample (inside the obp wheel) unpacked once into ~/.cache/recs (never the repo) for the
# OBD tests; they fetch it themselves too and skip with the reason if the package index cannot be reached.
obd-sample: $(STAMP)
	-$(BIN)/python tests/_obd_sample.py

test: $(STAMP) obd-sample
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info
