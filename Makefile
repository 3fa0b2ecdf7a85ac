# The two commands: `make demo` (train the tiny VDM on the built-in data, sample, score) and
# `make test` (the suite). Both create/refresh the virtualenv in .venv first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdir/demo
# The suite runs on this many pytest-xdist workers, a test file to each (its module fixtures
# compile once): most tests are compile-bound and XLA compiles on one thread.
TEST_WORKERS ?= 2
DEPS_HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
CORE_STAMP := $(VENV)/.core-$(DEPS_HASH)
TEST_STAMP := $(VENV)/.test-$(DEPS_HASH)

.PHONY: demo test install lint clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(CORE_STAMP) $@

install: $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(PY) -m experiments.train --config configs/vdm_shapes.py:tiny --workdir $(WORKDIR)
	$(PY) -m experiments.sample --workdir $(WORKDIR) --prompt "a blue circle moving right" \
		--num_samples 4 --sampler ddim --steps 50 --guidance 3 --out $(WORKDIR)/sample.mp4
	$(PY) -m experiments.evaluate --workdir $(WORKDIR)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check vdm_jax experiments configs tests bench

clean-demo:
	rm -rf $(WORKDIR)
