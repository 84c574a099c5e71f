"""Shared fixtures and the process guard. Redis: PULSE_TEST_REDIS_URL (default db 15); with CI=true a missing
Redis fails the run.

The process guard: a test that starts another process (a server under daphne, uvicorn or granian, redis-server,
nginx, Chromium, node, ``python -m ...``) carries the ``processes`` marker, and one that does not and starts one
fails, in every run. So ``make test-fast`` (``-m "not processes"``) can never start a server by accident, and
the marker cannot go stale as tests change. Everything under tests/system/ and tests/browser/ is marked by its
folder; elsewhere a test (or its module) says ``@pytest.mark.processes`` itself.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.servers import redis_reachable

REDIS_URL = os.environ.get("PULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis URL; fails under CI=true when Redis is down, skips on a laptop without it."""
    if not redis_reachable(REDIS_URL):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}, and CI needs it.")
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (set PULSE_TEST_REDIS_URL); Redis tests skipped.")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards."""
    import redis

    prefix = f"pulsetest-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def pulse_redis(settings: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> str:
    """Point PULSE at Redis with a unique prefix for this test."""
    settings.PULSE = {**(settings.PULSE or {}), "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}  # type: ignore[attr-defined]
    return redis_url


@pytest.fixture(scope="session", autouse=True)
def _close_async_db_connections(django_db_setup: None, django_db_blocker: object) -> Iterator[None]:
    """Close connections opened by async ORM calls in asgiref's executor thread before the test databases are
    dropped (PostgreSQL refuses to drop a database that is still in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _fresh_pulse_process_state() -> Iterator[None]:
    """Each test starts with a fresh runtime (broker, hub, presence backend, liveness, app cache): they are per
    process, each test has its own loop, and rolled-back rows send no signals."""
    from django_pulse.server.runtime import reset_runtime

    reset_runtime()
    _forget_crashed_servers()
    yield
    reset_runtime()


def _forget_crashed_servers() -> None:
    """Remove the in-memory broker's lock file of this process's database when no process holds it: a server of
    an earlier test killed with kill -9 on the same test database left it, and this process (no server) would
    leave its outbox rows to that server, which is what a site wants after a crash but not the next test."""
    import fcntl

    from django_pulse.broker.memory import _database_identity, _lock_path

    identity = _database_identity()
    if identity is None:
        return
    path = _lock_path(identity)
    if not path.exists():
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # a live server of this database holds it
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)


# Folders whose every test starts processes: the marker is given by the folder, not written on each test.
PROCESS_FOLDERS = ("system", "browser")
_TESTS = Path(__file__).resolve().parent

# `make test` runs the suite on several pytest-xdist workers with --dist loadgroup; a test in a group runs on one
# worker, after the others of its group. The load tests and measurements (thousands of connections, the
# benchmark, the rolling restart behind nginx, Redis's own throughput) are one group, so two of them never run
# at once and their timing margins are the ones they were written with. (Tests that share a module- or
# package-scoped fixture, such as one Chromium or one Redis Cluster, are grouped by module below.)
LOAD_GROUP = (
    "system/test_loopback_proof.py",
    "system/test_deployment_nginx.py",
    "package/test_bench.py::test_quick_mode_runs_every_server_end_to_end",
    "package/test_bench_scale.py::test_scale_run_records_idle_mix_and_storm",
    "package/test_capacity.py::test_redis_ceiling_measures_the_publish_script_on_a_redis_of_its_own",
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under a ``-m`` that leaves out every test with the ``processes`` marker (``make test-fast``), the folders
    whose every test has it are not even imported: their imports (Playwright, the servers' test helpers) were a
    good part of each worker's start."""
    if collection_path.parent == _TESTS and collection_path.name in PROCESS_FOLDERS:
        return True if _deselects_processes(config.getoption("markexpr")) else None
    return None


def _deselects_processes(markexpr: str) -> bool:
    """Whether the mark expression ``markexpr`` is false for every test with the ``processes`` marker, whatever
    its other markers."""
    if not markexpr:
        return False
    from _pytest.mark.expression import Expression

    try:
        expression = Expression.compile(markexpr)
    except Exception:  # pytest reports a bad expression itself
        return False
    names = sorted(set(re.findall(r"[A-Za-z_][\w]*", markexpr)) - {"and", "or", "not", "processes"})
    for values in itertools.product((False, True), repeat=len(names)):
        marks = dict(zip(names, values, strict=True), processes=True)
        if expression.evaluate(lambda name, /, marks=marks, **kwargs: marks.get(name, False)):
            return False
    return True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if not path.is_relative_to(_TESTS):
            continue
        relative = path.relative_to(_TESTS)
        if relative.parts[0] in PROCESS_FOLDERS:
            item.add_marker(pytest.mark.processes)
        test = f"{relative.as_posix()}::{item.name.partition('[')[0]}"
        if any(test == entry or test.startswith(entry + "::") for entry in LOAD_GROUP):
            item.add_marker(pytest.mark.xdist_group("load"))
            continue
        if _uses_a_shared_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.partition("::")[0]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under xdist, the long tests (those that start processes, the fuzz runs) are handed out first and the
        # quick in-process ones fill the workers' gaps at the end, instead of a few long system tests last.
        items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in ("processes", "fuzz")))


def _uses_a_shared_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module- or package-scoped fixture (a Chromium, a Redis Cluster, a built wheel).
    The tests of its module then run on one worker, so the fixture is set up once per module, not per worker."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(fixture[-1].scope in ("module", "package") for fixture in definitions)


class _ProcessGuard:
    """Wraps ``subprocess.Popen`` (which ``subprocess.run``, asyncio's subprocesses and Playwright all go
    through): while a test without the ``processes`` marker runs, starting a process fails that test."""

    def __init__(self) -> None:
        self.current: str | None = None  # the node id of a running test that may not start processes
        self.started: list[str] = []  # what such a test tried to start (a thread's failure is reported too)
        self._execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
        guard = self

        def execute_child(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
            if guard.current is not None:
                guard.started.append(str(args))
                pytest.fail(
                    f"{guard.current} starts a process ({args!r}) but is not marked: mark it "
                    "@pytest.mark.processes (or move it to tests/system/) so the fast tier leaves it out."
                )
            return guard._execute_child(popen, args, *rest, **kwargs)

        subprocess.Popen._execute_child = execute_child  # type: ignore[attr-defined]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._guarded(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._guarded(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._guarded(item))

    def _guarded(self, item: pytest.Item) -> Generator[None, object, object]:
        if item.get_closest_marker("processes") is not None:
            return (yield)
        self.current, self.started = item.nodeid, []
        try:
            result = yield
        finally:
            self.current = None
        if self.started:  # caught and swallowed by the test (or raised in another thread): still a failure
            pytest.fail(f"{item.nodeid} started a process without the processes marker: {self.started[0]}")
        return result


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_ProcessGuard(), "pulse-process-guard")
