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
$(STAMP): pyproject.toml android_demo/package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all]'
	cd android_demo && npm install --silent --no-audit --no-fund
	test -e /usr/share/java/junit4.jar || apt-get install -y -q junit4 || sudo apt-get install -y -q junit4
	touch $(STAMP)

demo: install
	$(VENV)/bin/gemma-edge info builtin:gemma3-270m
	$(VENV)/bin/gemma-edge run builtin:gemma3-270m --max-new-tokens 48 \
		--prompt "The first rule of shipping a model to a phone is"
	$(VENV)/bin/gemma-edge export builtin:gemma3-270m --format tflite,onnx --out build --overwrite
	$(VENV)/bin/gemma-edge check build/tflite --against builtin:gemma3-270m
	$(VENV)/bin/gemma-edge check build/onnx --against builtin:gemma3-270m
	$(VENV)/bin/gemma-edge quantize build/onnx --recipe int8-calibrated --overwrite
	$(VENV)/bin/gemma-edge check build/onnx-int8-calibrated --against builtin:gemma3-270m
	$(VENV)/bin/gemma-edge package build/onnx-int8-calibrated --as onnx-bundle --overwrite
	$(VENV)/bin/gemma-edge run build/onnx-int8-calibrated.onnx-bundle --max-new-tokens 32 \
		--prompt "The first rule of shipping a model to a phone is"
	$(VENV)/bin/gemma-edge report build

test: install
	$(PY) -m pytest tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
