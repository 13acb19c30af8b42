# autokd: `make demo` runs a real search on the built-in digits dataset; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# torch and torchvision are pinned here (pyproject accepts any torch >= 2.4).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]' $(TORCH_PINS)
	touch $@

demo: install
	$(VENV)/bin/autokd search
	$(VENV)/bin/autokd report

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf runs .cache .pytest_cache
