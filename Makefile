# Two commands for a fresh machine (see README):
#   make serve   installs what the server needs (no torch) and serves the bundled model
#   make test    installs everything and runs lint, type checks and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

TRITON_VENV ?= .venv-triton
KSERVE_VENV ?= .venv-kserve
PERF_VENV ?= .venv-perf

.PHONY: serve test install-serve install-dev install-triton-test install-kserve-test install-perf-analyzer-test install-browser-test lint typecheck unit demo-model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install-serve: $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'

# torch first, pinned: this version is a CPU wheel on the machine; anything else pulls CUDA.
# libmtl (the reference of tests/unit/training/test_reference_agreement.py) with --no-deps: it
# requires torchvision, which does not import beside this torch; the test loads only its weightings.
install-dev: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,train,triton,ray,dev]'
	$(BIN)/pip install -q --no-deps libmtl==1.1.5

# A real Triton server for the tests: the nvidia-pytriton wheel ships tritonserver (Python
# backend only) and pins numpy<2, so it gets an environment of its own (see tests/tritonserver.py).
$(TRITON_VENV)/bin/python:
	$(PYTHON) -m venv $(TRITON_VENV)

install-triton-test: $(TRITON_VENV)/bin/python
	$(TRITON_VENV)/bin/pip install -q nvidia-pytriton==0.7.0 onnxruntime pillow

# The KServe Python SDK for tests/integration/test_kserve_sdk.py: kserve pins pandas<3 and
# python-dateutil<3 (it would downgrade the dev environment) and its protobuf package collides
# with tritonclient's in one process, so it too gets an environment of its own, driven through
# tests/kserve_sdk_worker.py. The .gitignore inside keeps git (and ruff) out of it.
$(KSERVE_VENV)/bin/python:
	$(PYTHON) -m venv $(KSERVE_VENV)
	echo '*' > $(KSERVE_VENV)/.gitignore

install-kserve-test: $(KSERVE_VENV)/bin/python
	$(KSERVE_VENV)/bin/pip install -q kserve==0.21.0

# Triton's perf_analyzer for tests/integration/test_perf_analyzer.py: the PyPI perf-analyzer
# wheel needs glibc 2.38 (this Debian has 2.36); the binary inside tritonclient 2.51.0 needs
# 2.34, libb64 (Debian) and libcudart (the CUDA runtime wheel; no GPU is needed to run it).
$(PERF_VENV)/bin/python:
	$(PYTHON) -m venv $(PERF_VENV)
	echo '*' > $(PERF_VENV)/.gitignore

install-perf-analyzer-test: $(PERF_VENV)/bin/python
	dpkg -s libb64-0d >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libb64-0d)
	$(PERF_VENV)/bin/pip install -q tritonclient==2.51.0 nvidia-cuda-runtime-cu12

# The page's browser tests (tests/browser) drive Debian's Chromium through Playwright, which
# cannot download browser builds of its own here; playwright itself comes with the dev extra.
install-browser-test: install-dev
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/pip install -q playwright==1.65.2

serve: install-serve
	$(BIN)/polyhead serve --repo model_repo --host $(HOST) --port $(PORT)

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

test: install-dev install-triton-test install-kserve-test install-perf-analyzer-test install-browser-test lint typecheck
	$(BIN)/python -m pytest

# Rebuild the bundled demo model from scratch (about 25 minutes on 2 CPU cores).
demo-model: install-dev
	$(BIN)/polyhead data synth --out data/scenes --n 2000 --size 128 --seed 0 --overwrite
	rm -rf runs/scenes
	$(BIN)/polyhead train --config configs/scenes.yaml --out runs/scenes
	$(BIN)/polyhead export --run runs/scenes --repo model_repo --name scenes

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(KSERVE_VENV) $(PERF_VENV) .pytest_cache .ruff_cache .mypy_cache
