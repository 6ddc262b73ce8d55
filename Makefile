# make demo: set up (venv, install, default model) and fine-tune the sentiment recipe.
# make test: set up and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL := models/SmolLM2-135M-Instruct

.PHONY: setup model demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on disk; the project's range keeps it.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

$(MODEL)/config.json: | $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m llm_tune fetch-default-model --out $(MODEL)

model: $(MODEL)/config.json

demo: setup model
	HF_HUB_OFFLINE=1 $(VENV)/bin/accelerate launch -m llm_tune recipes/sentiment.yaml

test: setup model
	$(VENV)/bin/ruff check llm_tune tests bench
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
