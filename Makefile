# make demo: set up (venv, install, default model) and fine-tune the sentiment recipe.
# make test: set up and run the test suite (make test-slow: the slow end-to-end tests, which CI runs too).
# make lean: every shipped recipe one step in a venv of the required dependencies only (CI runs it last).
# make test-fast: the in-process tier (bad input, recipes, pure functions), under a minute: run it after every edit.
# make format: ruff's layout over the tree; make typecheck: mypy over the typed core (pyproject's [tool.mypy]).
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL := models/SmolLM2-135M-Instruct
# One process, every value given: accelerate then has no defaults to warn about. Without
# --num_cpu_threads_per_process, accelerate launch sets OMP_NUM_THREADS=1: one core of the CPU.
THREADS := $(shell nproc)
LAUNCH := accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(THREADS)

.PHONY: setup model demo test test-fast test-slow format typecheck compat lean clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on disk; the project's range keeps it.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"  # the test extra brings every optional extra (qlora, gguf, report, sweep)
	touch $@

setup: $(VENV)/.installed

$(MODEL)/config.json: | $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m llm_tune fetch-default-model --out $(MODEL)

model: $(MODEL)/config.json

demo: setup model
	HF_HUB_OFFLINE=1 $(VENV)/bin/$(LAUNCH) -m llm_tune recipes/sentiment.yaml

# Two workers, one module each (module fixtures train once), one thread each: most tests wait on process start-up
# and tiny models, so two at a time halve the wall time without oversubscribing the cores.
test: setup model
	$(VENV)/bin/ruff check llm_tune tests bench
	$(VENV)/bin/ruff format --check llm_tune tests bench
	$(VENV)/bin/mypy
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m "not slow" tests

# `llm_tune.cli.main([...])` in this process for the bad-input corpus and the recipes, and unit tests of pure functions.
test-fast: setup model
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m fast tests

format: setup
	$(VENV)/bin/ruff format llm_tune tests bench

typecheck: setup
	$(VENV)/bin/mypy

# The end-to-end tests of several processes (distributed, resume, export, push); CI runs them after `make test`.
test-slow: setup model
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15 -m slow tests

# make compat: a separate venv with every dependency at its declared floor, then a smoke subset of the suite.
COMPAT := .venv-compat
compat: model
	test -x $(COMPAT)/bin/python || python3 -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q "torch==2.13.0"
	python3 bench/floors.py > $(COMPAT)/floors.txt
	$(COMPAT)/bin/python -m pip install -q -c $(COMPAT)/floors.txt -e ".[test]"
	$(COMPAT)/bin/python -m pip freeze | grep -iE "^(torch|transformers|trl|peft|accelerate|datasets)=="
	HF_HUB_OFFLINE=1 $(COMPAT)/bin/python -m pytest -q tests/test_recipes.py tests/test_speed.py tests/test_data.py

# make lean: a venv with the required dependencies only (no extras, no test tools), then every shipped recipe one step
# with its end-of-run evaluation on a tiny model (.ci/lean_recipes.py): what `pip install llm_tune` users get.
LEAN := .venv-lean
lean: model
	test -x $(LEAN)/bin/python || python3 -m venv $(LEAN)
	$(LEAN)/bin/python -m pip install -q --upgrade pip
	$(LEAN)/bin/python -m pip install -q "torch==2.13.0"
	$(LEAN)/bin/python -m pip install -q .
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(LEAN)/bin/python .ci/lean_recipes.py

clean:
	rm -rf runs .pytest_cache
