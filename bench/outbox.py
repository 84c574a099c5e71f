"""``python -m bench.outbox [--quick]``: the cost of durable publishes (docs/durability.md).

1. Save cost, in one process per database (SQLite file, PostgreSQL): saves of a registered model (``register``,
   JSON data, Redis broker), alternating ``PULSE["OUTBOX"]`` on (the row written in the save's transaction,
   published right after the commit, deleted) and off (published from an ``on_commit`` callback), in
   ``transaction.atomic()`` and in autocommit, in blocks of 50 saves per mode on a warm runtime (as in a server
   process, which builds its runtime once). Reported: p50 per save of each, and the outbox's ratio and
   difference against ``on_commit``.
2. Throughput through one relay: ``--writers`` processes (4) share a schedule of R saves/s for D seconds, each
   save a transaction with ``publish_on_commit``, leaving every row to the relays (as a writer with the in-memory
   broker does while a server holds the pages); one relay in another process (what ``manage.py pulse relay``
   runs) publishes them into Redis; this process subscribes to Redis and times each message from its commit (the
   writer's clock, same machine) to its receipt. Reported: the rate the writers reached, p50, p99, max, lost and
   repeated, and the relay's rounds: rows per round and the p50/p99 of each step (claim, order check, publish,
   delete). The relay is woken by ``NOTIFY`` on PostgreSQL and polls (``OUTBOX_POLL_INTERVAL``) on SQLite.

SQLite is configured as docs/durability.md tells sites to (WAL, ``synchronous=NORMAL``, ``IMMEDIATE``
transactions).
Quick: 300 saves per mode, R=1,000 for 1 s (seconds: checks the harness). Full: 2,000 saves per mode, R=1,000
for 5 s. PostgreSQL: ``BENCH_POSTGRES_URL`` (default postgres://postgres@127.0.0.1:5432/pulse_bench, created if
missing); skipped with a note when it does not answer. The machine is shared: compare the figures of one run with
each other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "bench-outbox"
RATE = 1000
#: Writer processes sharing RATE (one Python process does not commit 1,000 transactions a second here).
WRITERS = 4
#: Saves each writer commits before the schedule (not timed): the relay's and the writers' first rounds load
#: scripts, open connections and import what they use.
WARMUP = 20
#: Saves per mode before the save-cost bench switches to the next mode (under a fresh runtime, whose first save is
#: not timed).
BLOCK = 50
#: docs/durability.md's SQLite settings ("SQLite").
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
}
_SEQ = re.compile(rb'"seq":\s*(\d+)')


def _configure(database: str, redis_url: str, prefix: str) -> None:
    import django
    from django.conf import settings

    if database.startswith("postgres"):
        import dj_database_url

        db = dj_database_url.parse(database)
    else:
        # As docs/durability.md tells SQLite sites to configure it (WAL: readers and the relay's claims do not
        # wait for a writer's commit), with the bench's longer lock timeout.
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": database, "OPTIONS": {**SQLITE_OPTIONS, "timeout": 20}}
    settings.configure(
        SECRET_KEY="django-pulse-bench-not-secret",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "rest_framework", "django_pulse"],
        DATABASES={"default": db},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PULSE={"REDIS_URL": redis_url, "REDIS_PREFIX": prefix},
        LOGGING_CONFIG=None,
    )
    django.setup()


def _migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _child_saves(database: str, redis_url: str, count: int) -> dict[str, Any]:
    """Per-save p50 with and without the outbox, in a transaction and in autocommit, interleaved."""
    prefix = "bench-ob-" + secrets.token_hex(4)
    _configure(database, redis_url, prefix)
    _migrate()
    from django.contrib.auth.models import Group
    from django.db import connection, transaction
    from django.test import override_settings

    from django_pulse.publishers import register

    register(Group, channel=CHANNEL)
    pulse = {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}
    modes = [(outbox, atomic) for atomic in (True, False) for outbox in (False, True)]
    samples: dict[tuple[bool, bool], list[float]] = {mode: [] for mode in modes}
    Group.objects.all().delete()
    # Blocks of BLOCK saves per mode, the modes taking turns: a block runs under one PULSE (override_settings
    # builds a new runtime, whose first save opens its Redis connection and loads its scripts, which a server
    # process does once), so each block's first save is not timed. The first block of each mode warms up too.
    blocks = -(-count // (BLOCK - 1))
    for block in range(blocks + 1):
        for outbox, atomic in modes:
            with override_settings(PULSE={**pulse, "OUTBOX": outbox}):
                for i in range(BLOCK):
                    name = f"g{block}-{i}-{int(outbox)}{int(atomic)}"
                    start = time.perf_counter()
                    if atomic:
                        with transaction.atomic():
                            Group.objects.create(name=name)
                    else:
                        Group.objects.create(name=name)
                    elapsed = time.perf_counter() - start
                    if block and i and len(samples[(outbox, atomic)]) < count:
                        samples[(outbox, atomic)].append(elapsed)
    from django_pulse.models import OutboxMessage

    left = OutboxMessage.objects.count()
    Group.objects.all().delete()
    result: dict[str, Any] = {"database": connection.vendor, "saves_per_mode": count, "rows_left": left}
    for atomic in (True, False):
        before, after = _p50_ms(samples[(False, atomic)]), _p50_ms(samples[(True, atomic)])
        result["atomic" if atomic else "autocommit"] = {
            "on_commit_p50_ms": before,
            "outbox_p50_ms": after,
            "added_ms": round(after - before, 3),
            "ratio": round(after / before, 2),
        }
    _delete_keys(redis_url, prefix)
    return result


#: The relay's steps timed by the throughput run (where a round's milliseconds go).
_STEPS = ("relay_round", "_claim", "_in_order", "broadcast_batch", "_delete")


def _child_relay(database: str, redis_url: str, prefix: str) -> None:
    """One relay, publishing until stdin closes; then prints the p50 and p99 of its steps (ms) and rows per round."""
    _configure(database, redis_url, prefix)
    from django_pulse.models import OutboxMessage
    from django_pulse.server import relay as relay_module
    from django_pulse.server.runtime import get_runtime

    OutboxMessage.objects.filter(channel=CHANNEL).delete()  # left by an interrupted run
    spent: dict[str, list[float]] = {step: [] for step in _STEPS}
    sizes: list[int] = []

    def timed(step: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[step].append(time.perf_counter() - start)

        return run

    for step in _STEPS:
        if hasattr(relay_module, step):  # (a version of the relay without the step: not timed)
            setattr(relay_module, step, timed(step, getattr(relay_module, step)))
    round_ = relay_module.relay_round

    def counted(*args: Any, **kwargs: Any) -> Any:
        result = round_(*args, **kwargs)
        if result.published:
            sizes.append(result.published)
        return result

    relay_module.relay_round = counted
    relay = relay_module.Relay(get_runtime())
    relay.start()
    print("ready", flush=True)
    sys.stdin.read()
    relay.stop(timeout=5)
    steps = {}
    for step, samples in spent.items():
        samples.sort()
        if samples:
            steps[step.strip("_")] = {
                "p50_ms": round(samples[len(samples) // 2] * 1000, 2),
                "p99_ms": round(samples[int(0.99 * len(samples))] * 1000, 2),
            }
    rows = round(statistics.mean(sizes), 1) if sizes else 0
    print(json.dumps({"rounds": len(spent["relay_round"]), "rows_per_busy_round": rows, "steps": steps}), flush=True)


def _child_writer(
    database: str, redis_url: str, prefix: str, seconds: float, index: int, writers: int, start: float
) -> None:
    """Writer ``index`` of ``writers``: commits saves ``index``, ``index + writers``, … at their times of a RATE a
    second schedule starting at ``start`` (wall clock), each with one durable publish left to the relays; prints
    each commit's time."""
    _configure(database, redis_url, prefix)
    from django.db import connection, transaction

    from django_pulse import _outbox, pulse

    _outbox._publishes_here = lambda runtime: False  # leave every row to the relay, as a non-serving writer does
    connection.ensure_connection()
    for _ in range(WARMUP):  # through the relay before the schedule starts: its first rounds are not timed
        with transaction.atomic():
            pulse.publish_on_commit(CHANNEL, "n", {"seq": "warm-up"})
    committed: dict[int, float] = {}
    late = max(0.0, time.time() - (start + index / RATE))  # ready after its first save's time: it catches up
    total = int(RATE * seconds)
    for seq in range(index, total, writers):
        delay = start + seq / RATE - time.time()
        if delay > 0:
            time.sleep(delay)
        with transaction.atomic():
            pulse.publish_on_commit(CHANNEL, "n", {"seq": seq})
        committed[seq] = time.time()
    print(json.dumps({"committed": committed, "late": late}), flush=True)


def _delete_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _run_child(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.outbox", *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


def _saves(database: str, redis_url: str, count: int) -> dict[str, Any]:
    child = _run_child(["--child", "saves", "--database", database, "--redis-url", redis_url, "--count", str(count)])
    out, _ = child.communicate(timeout=600)
    if child.returncode:
        raise RuntimeError(f"the save bench failed on {database}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _throughput(database: str, redis_url: str, seconds: float, writers: int = WRITERS) -> dict[str, Any]:
    import redis

    prefix = "bench-ob-" + secrets.token_hex(4)
    common = ["--database", database, "--redis-url", redis_url, "--prefix", prefix]
    # The tables first, so neither child migrates.
    relay = _run_child(["--child", "relay", *common], stdin=subprocess.PIPE)
    assert relay.stdout is not None and relay.stdin is not None
    received: dict[int, list[float]] = {}
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"{prefix}:bus:*")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                now = time.time()
                match = _SEQ.search(message["data"])
                if match:
                    received.setdefault(int(match.group(1)), []).append(now)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        if relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay did not start")
        start = time.time() + 3.0  # the writers' Django set up, connected and warmed up
        timing = ["--seconds", str(seconds), "--writers", str(writers), "--start", str(start)]
        processes = [_run_child(["--child", "writer", *common, *timing, "--index", str(i)]) for i in range(writers)]
        committed: dict[int, float] = {}
        late = 0.0
        for process in processes:
            out, _ = process.communicate(timeout=120 + seconds)
            if process.returncode:
                raise RuntimeError("a writer failed")
            report = json.loads(out.splitlines()[-1])
            committed.update((int(seq), at) for seq, at in report["committed"].items())
            late = max(late, report["late"])
        rate = len(committed) / (max(committed.values()) - start)
        deadline = time.monotonic() + 15
        while len(received) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a repeat would come right behind
    finally:
        stop.set()
        listener.join()
        relay_out, _ = relay.communicate("", timeout=30)  # closing its stdin stops it
        pubsub.close()
        client.close()
        _delete_keys(redis_url, prefix)
    latencies = sorted(times[0] - committed[seq] for seq, times in received.items() if seq in committed)
    quantile = (
        (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1))
        if latencies
        else (lambda q: None)
    )
    return {
        "database": "postgresql (NOTIFY)" if database.startswith("postgres") else "sqlite (polling)",
        "saves": len(committed),
        "writers": writers,
        "writer_rate_per_s": round(rate),
        "writer_started_late_s": round(late, 2),
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "lost": len(set(committed) - set(received)),
        "repeated": sum(len(times) - 1 for times in received.values()),
        "relay": json.loads(relay_out.splitlines()[-1]),
    }


def _postgres(url: str) -> str | None:
    """``url`` once its database exists (made if missing), or None when PostgreSQL does not answer."""
    import dj_database_url
    import psycopg

    params = dj_database_url.parse(url)
    try:
        with psycopg.connect(
            host=params["HOST"], port=params["PORT"] or 5432, user=params["USER"], dbname="postgres", autocommit=True
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [params["NAME"]]).fetchone():
                conn.execute(f'CREATE DATABASE "{params["NAME"]}"')
    except psycopg.OperationalError:
        return None
    return url


def _prepare(database: str, redis_url: str) -> None:
    child = _run_child(["--child", "migrate", "--database", database, "--redis-url", redis_url])
    child.communicate(timeout=300)
    if child.returncode:
        raise RuntimeError(f"migrate failed on {database}")
    _vacuum(database)


def _vacuum(database: str) -> None:
    """VACUUM the tables the bench churns, on PostgreSQL: the bench's database outlives a run, and a server with
    autovacuum off (a test machine's) would have each run scan the dead rows of all the runs before it (an outbox
    table is rows inserted and deleted all day: keep autovacuum on, PostgreSQL's default)."""
    if not database.startswith("postgres"):
        return
    import dj_database_url
    import psycopg

    params = dj_database_url.parse(database)
    with psycopg.connect(
        host=params["HOST"], port=params["PORT"] or 5432, user=params["USER"], dbname=params["NAME"], autocommit=True
    ) as conn:
        conn.execute("VACUUM django_pulse_outboxmessage, auth_group")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds: checks the harness, not the speed")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/pulse_bench")
    )
    parser.add_argument("--child", choices=["saves", "relay", "writer", "migrate"], help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--writers", type=int, default=WRITERS, help="writer processes sharing the 1,000 saves/s")
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "saves":
        print(json.dumps(_child_saves(args.database, args.redis_url, args.count)))
        return 0
    if args.child == "relay":
        _child_relay(args.database, args.redis_url, args.prefix)
        return 0
    if args.child == "writer":
        _child_writer(args.database, args.redis_url, args.prefix, args.seconds, args.index, args.writers, args.start)
        return 0
    if args.child == "migrate":
        _configure(args.database, args.redis_url, "bench-ob")
        _migrate()
        return 0

    count = 300 if args.quick else 2000
    seconds = 1.0 if args.quick else 5.0
    result: dict[str, Any] = {"mode": "quick" if args.quick else "full", "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="pulse-bench-outbox-") as workdir:
        databases = [str(Path(workdir) / "bench.sqlite3")]
        postgres = _postgres(args.postgres_url)
        if postgres is None:
            result["postgresql"] = f"skipped: nothing answers at {args.postgres_url}"
        else:
            databases.append(postgres)
        for database in databases:
            _prepare(database, args.redis_url)
        result["save_cost"] = [_saves(database, args.redis_url, count) for database in databases]
        for database in databases:
            _vacuum(database)  # the saves' dead rows
        result["through_one_relay"] = [
            _throughput(database, args.redis_url, seconds, args.writers) for database in databases
        ]
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    lost = sum(run["lost"] + run["repeated"] for run in result["through_one_relay"])
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
