# Two commands a new user needs: `make demo` and `make test`.
# Both create .venv if missing and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# On a CPU machine keep torch on the CPU wheel; a GPU user sets CONSTRAINTS= (see README).
CONSTRAINTS ?= -c constraints-cpu.txt
MINUTES ?= 10
OUT ?= runs/demo

.PHONY: demo test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints-cpu.txt | $(VENV)/bin/python
	$(PIP) install $(CONSTRAINTS) -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints-cpu.txt | $(VENV)/bin/python
	$(PIP) install $(CONSTRAINTS) -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(VENV)/bin/xling demo --run $(OUT) --minutes $(MINUTES)

test: $(VENV)/.installed-dev
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check xling tests bench

bench: $(VENV)/.installed-dev
	for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
