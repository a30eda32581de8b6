# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gemma-edge-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: install demo test lint clean

install: $(STAMP)

# torch first, exactly 2.13.0 (the local CPU wheel); then the project, editable, with extras.
# Re-runs only when pyproject.toml changes, so a second `make install` takes no time.
$(STAMP): pyproject.toml android_demo/package.json exporter/web/package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	@# llama-cpp-python (the gguf extra) compiles llama.cpp: both cores, and without the
	@# multimodal library, which the llama.cpp runner never loads
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PY) -m pip install -q --disable-pip-version-check -e '.[all]'
	@# keras-hub without its deps: they name tensorflow-text, whose wheel pulls the full
	@# tensorflow over tensorflow-cpu; Gemma presets need neither (tests/test_keras_source.py)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps keras-hub==0.32.0
	cd android_demo && npm install --silent --no-audit --no-fund
	test -e /usr/share/java/junit4.jar || apt-get install -y -q junit4 || sudo apt-get install -y -q junit4
	cd exporter/web && npm install --ignore-scripts --silent --no-audit --no-fund
	test -x /usr/bin/chromium || apt-get install -y -q chromium || sudo apt-get install -y -q chromium
	touch $(STAMP)

# The main job on the built-in Gemma 3 270M: describe it, generate, then the CI build in
# gemma-edge.toml (export LiteRT + ONNX, quantize int8 + int4, check, package, report).
demo: install
	$(VENV)/bin/gemma-edge info builtin:gemma3-270m
	$(VENV)/bin/gemma-edge run builtin:gemma3-270m --max-new-tokens 48 \
		--prompt "The first rule of shipping a model to a phone is"
	$(VENV)/bin/gemma-edge build gemma-edge.toml || test $$? -eq 3
	$(VENV)/bin/gemma-edge run build/packages/tflite-int8-dynamic.litertlm --max-new-tokens 32 \
		--prompt "The first rule of shipping a model to a phone is"
	@# exit 3 = a gate failed, shown in the report, not hidden (the LiteRT int4's top-1 sits 0.5 points above its 85 % gate, within a CPU's kernel spread)
	$(VENV)/bin/gemma-edge report build || test $$? -eq 3

# two workers, a test module each at a time; the real-model tests, queued first, run one
# after another in one worker (tests/conftest.py schedules them)
test: install
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
