# django-pulse: the README's two commands (make demo, make test) and helpers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
export PYTHONDONTWRITEBYTECODE := 1
# The example's settings read HOST/PORT (PULSE SERVER_URL: where its manage.py commands find the server).
export HOST PORT

# daphne's own limits for the demo (docs/security.md): refuse WebSocket frames/messages a little over
# PULSE MAX_MESSAGE_SIZE (64 KiB) from their header, before reading them; close a handshake not completed in
# 5 s; ping an idle WebSocket after 20 s and drop it if the ping is unanswered for 30 s.
DAPHNE_LIMITS ?= --websocket-max-frame-size 131072 --websocket-max-message-size 131072 \
	--websocket_connect_timeout 5 --ping-interval 20 --ping-timeout 30

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
	@echo "  SECRET_KEY: generated on first run, kept in example_project/.demo-secret-key (git-ignored, mode 600);"
	@echo "  set DJANGO_SECRET_KEY to use your own. DEBUG is off (DJANGO_DEBUG=1 turns it on)."
	@echo ""
	cd example_project && exec ../$(PY) -m daphne -b $(HOST) -p $(PORT) $(DAPHNE_LIMITS) example_project.asgi:application

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
