# django-pulse: the README's two commands (make demo, make test) and helpers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
export PYTHONDONTWRITEBYTECODE := 1
# The example's settings read HOST/PORT (PULSE SERVER_URL: where its manage.py commands find the server).
export HOST PORT

.PHONY: demo test lint bench bench-quick clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps: reinstall only when pyproject.toml changes (a second run reuses .venv).
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.demo-installed $@

venv: $(VENV)/.dev-installed

demo: $(VENV)/.demo-installed
	cd example_project && ../$(PY) manage.py migrate --noinput
	cd example_project && ../$(PY) manage.py pulse enable --quiet-if-enabled
	@echo ""
	@echo "  Live Posts is at  http://$(HOST):$(PORT)/   (Ctrl-C to stop)"
	@echo "  Private messages: http://$(HOST):$(PORT)/private/    The seed's own page: http://$(HOST):$(PORT)/seed/"
	@echo ""
	cd example_project && exec ../$(PY) -m daphne -b $(HOST) -p $(PORT) example_project.asgi:application

test: $(VENV)/.dev-installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m mkdocs build --strict --quiet --site-dir $(VENV)/site

bench: $(VENV)/.dev-installed
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.fragments

bench-quick: $(VENV)/.dev-installed
	$(PY) -m bench --quick $(BENCH_ARGS)
	$(PY) -m bench.fragments --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
