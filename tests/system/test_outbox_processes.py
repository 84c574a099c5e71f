"""Durable publishes across real processes (docs/durability.md): a daphne server relays the outbox; writers are
separate Python processes on the same database (SQLite file, or a PostgreSQL database of the test's own), as a
shell, a worker or a second server would be. Subscribers are real WebSocket clients of the server.

- a writer killed (``os._exit``, as ``kill -9``) between its COMMIT and its publish: the server's relay publishes
  the message once the writer's lease runs out, exactly once;
- a writer killed after publishing and before deleting its row: the relay publishes it again under the same id,
  which the broker does not deliver twice;
- Redis unreachable (a cut TCP proxy) for 30 s while 500 saves commit: all 500 delivered in order after it
  returns, none twice, and the subscriber, connected throughout, resumes the channel by itself;
- two writers saving concurrently into one channel: subscribers get the messages in commit order;
- with the in-memory broker (no Redis), a save made by another process appears on the server's subscribers (on
  PostgreSQL woken by the writer's NOTIFY, not by polling);
- a second database (another SQLite file, another PostgreSQL database): its rows are relayed by the server and by
  ``pulse relay``, and the backlog is reported per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from django_pulse.clients.websocket import Realtime
from tests.support.servers import ROOT, LiveServer, live_server, scratch_database
from tests.support.tcpproxy import CuttableProxy

pytestmark = [pytest.mark.processes]

REDIS_PORT = 6379
MARIADB = os.environ.get("PULSE_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
PG_BASE = os.environ.get("DATABASE_URL", "") if os.environ.get("DATABASE_URL", "").startswith("postgres") else ""


@contextlib.contextmanager
def database(kind: str) -> Iterator[dict[str, str]]:
    """``extra_env`` for ``live_server``: nothing for a SQLite file of the server's own, or a new PostgreSQL
    database (on the server of ``DATABASE_URL``, else the local one) or MariaDB database
    (``PULSE_TEST_MARIADB_URL``), migrated by the server's start, dropped afterwards."""
    if kind == "sqlite":
        yield {}
        return
    if kind == "mariadb":
        try:
            import MySQLdb  # type: ignore[import-untyped,unused-ignore]  # mysqlclient ships no types
        except ImportError:
            if os.environ.get("CI"):  # CI installs it with the [dev] extra
                raise
            pytest.skip("mysqlclient is not installed")
        try:
            scratch = scratch_database(MARIADB)
            url = scratch.__enter__()
        except MySQLdb.OperationalError:
            if os.environ.get("CI"):  # MariaDB answers on every CI machine
                raise
            pytest.skip(f"no MariaDB / MySQL server answers at {MARIADB}")
        try:
            yield {"PULSE_LIVE_DATABASE_URL": url}
        finally:
            scratch.__exit__(None, None, None)
        return
    import psycopg

    scratch = scratch_database(PG_BASE or "postgres://postgres@127.0.0.1:5432/postgres")
    try:
        url = scratch.__enter__()
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no PostgreSQL server answers")
    try:
        yield {"PULSE_LIVE_DATABASE_URL": url}
    finally:
        scratch.__exit__(None, None, None)


def databases() -> list[Any]:
    """SQLite and PostgreSQL always; MariaDB (or MySQL 8) where one answers and mysqlclient is installed."""
    return ["sqlite", pytest.param("postgresql", id="postgresql"), pytest.param("mariadb", id="mariadb")]


@contextlib.contextmanager
def server_on(kind: str, *, redis_url: str | None, **pulse: Any) -> Iterator[LiveServer]:
    with database(kind) as env:
        settings = {"OUTBOX_LEASE": 2.0, "HISTORY_SIZE": 1000, **pulse}
        prefix = f"outbox{uuid.uuid4().hex[:8]}" if redis_url else None
        migrate_env = dict(env)
        with live_server(pulse=settings, redis_url=redis_url, redis_prefix=prefix, extra_env=migrate_env) as server:
            yield server


def writer(server: LiveServer, code: str, *, fault: str | None = None, timeout: float = 120) -> Any:
    """Run ``code`` in a new Django process on the server's database and broker settings; returns the
    completed process (its stdout)."""
    env = dict(server.env)
    env.pop("PULSE_TEST_FAULT", None)
    if fault:
        env["PULSE_TEST_FAULT"] = fault
    script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def backlog(server: LiveServer) -> dict[str, Any]:
    code = "import json\nfrom django_pulse.models import OutboxMessage as O\nprint(json.dumps(O.objects.backlog()))"
    done = writer(server, code)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def subscriber(server: LiveServer, channel: str) -> Realtime:
    token = await asyncio.to_thread(server.token, "watcher")
    client = await Realtime.connect(server.ws_url, token["token"])
    await client.subscribe(channel)
    return client


async def messages(client: Realtime, channel: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """``count`` messages of ``channel`` within ``timeout`` seconds overall; after the server's ``discontinuity``
    notice the client resumes the channel by itself (a ``resumed`` event; a refused resume would be the notice)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        frame = await client.next_event(max(0.1, deadline - time.monotonic()))
        if frame["action"] == "resumed":
            continue
        assert frame["action"] == "message", frame
        received.append(frame)
    return received


async def nothing_more(client: Realtime, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        frame = await client.next_event(seconds)
        raise AssertionError(f"a message arrived twice or unasked: {frame}")


SAVE_POST = """
from django.db import transaction
from posts.models import Post
with transaction.atomic():  # as a view under ATOMIC_REQUESTS saves
    Post.objects.create(user_name="ada", content={content!r})
"""


@pytest.mark.parametrize("kind", databases())
async def test_a_writer_killed_between_commit_and_publish_is_delivered_once_by_the_relay(kind: str) -> None:
    with server_on(kind, redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0") as server:
        client = await subscriber(server, "posts")
        done = await asyncio.to_thread(
            writer, server, SAVE_POST.format(content="after the crash"), fault="after_commit"
        )
        assert done.returncode == 137, done.stderr  # died after COMMIT, before publishing
        started = time.monotonic()
        (message,) = await messages(client, "posts", 1, timeout=20)
        assert message["name"] == "new_post" and message["data"]["post"]["content"] == "after the crash"
        assert time.monotonic() - started < 15  # the writer's lease (2 s) plus a poll
        await nothing_more(client, 3)
        assert (await asyncio.to_thread(backlog, server))["pending"] == 0
        await client.close()


@pytest.mark.parametrize("kind", databases())
async def test_a_relay_killed_after_publishing_and_before_deleting_delivers_nothing_twice(kind: str) -> None:
    with server_on(kind, redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0") as server:
        client = await subscriber(server, "posts")
        done = await asyncio.to_thread(writer, server, SAVE_POST.format(content="once"), fault="after_publish")
        assert done.returncode == 137, done.stderr  # published, then died before deleting its row
        (message,) = await messages(client, "posts", 1, timeout=10)
        assert message["data"]["post"]["content"] == "once"
        # The row is still there: the server's relay takes it when the writer's lease ends and publishes it again,
        # under the same id, which the broker does not deliver again.
        deadline = time.monotonic() + 20
        while (await asyncio.to_thread(backlog, server))["pending"] and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert (await asyncio.to_thread(backlog, server))["pending"] == 0
        await nothing_more(client, 2)
        await client.close()


WRITE_NUMBERS = """
import time
from django.db import transaction
from django_pulse import pulse
for n in range({count}):
    with transaction.atomic():
        pulse.publish_on_commit("numbers", "n", {{"n": n}})
    time.sleep({pause})
"""


@pytest.mark.parametrize("kind", databases())
async def test_redis_away_for_30_s_while_500_saves_commit_loses_nothing_and_repeats_nothing(kind: str) -> None:
    count, outage = 500, 30.0
    with (
        CuttableProxy(REDIS_PORT) as proxy,
        server_on(kind, redis_url=f"redis://127.0.0.1:{proxy.port}/0") as server,
    ):
        client = await subscriber(server, "numbers")
        proxy.cut()
        cut_at = time.monotonic()
        # 500 transactions committed while Redis is away (about 8 s of writing), each with its message.
        done = await asyncio.to_thread(writer, server, WRITE_NUMBERS.format(count=count, pause=0.015))
        assert done.returncode == 0, done.stderr
        assert (await asyncio.to_thread(backlog, server))["pending"] == count
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - cut_at)))
        proxy.restore()
        restored_at = time.monotonic()
        received = await messages(client, "numbers", count, timeout=60)
        # The relay's backoff tops out at 5 s: back within that and a round or two of publishing.
        assert time.monotonic() - restored_at < 20
        assert [m["data"]["n"] for m in received] == list(range(count))  # every one, in order
        assert len({m["id"] for m in received}) == count
        await nothing_more(client, 2)
        assert (await asyncio.to_thread(backlog, server))["pending"] == 0
        await client.close()


WRITE_IN_COMMIT_ORDER = """
from django.db import connection, transaction
from django_pulse import pulse
for _ in range({count}):
    with transaction.atomic(), connection.cursor() as cursor:
        # Taking the counter's row lock first orders the transactions: they commit in the counter's order.
        cursor.execute("UPDATE outbox_counter SET n = n + 1 WHERE id = 1")
        cursor.execute("SELECT n FROM outbox_counter WHERE id = 1")
        (n,) = cursor.fetchone()
        pulse.publish_on_commit("ordered", "n", {{"n": n}})
"""
MAKE_COUNTER = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE outbox_counter (id integer PRIMARY KEY, n integer NOT NULL)")
    cursor.execute("INSERT INTO outbox_counter (id, n) VALUES (1, 0)")
"""


@pytest.mark.parametrize("kind", databases())
async def test_two_processes_saving_into_one_channel_deliver_in_commit_order(kind: str) -> None:
    per_writer = 100
    with server_on(kind, redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0") as server:
        setup = await asyncio.to_thread(writer, server, MAKE_COUNTER)
        assert setup.returncode == 0, setup.stderr
        client = await subscriber(server, "ordered")
        code = WRITE_IN_COMMIT_ORDER.format(count=per_writer)
        first, second = await asyncio.gather(
            asyncio.to_thread(writer, server, code), asyncio.to_thread(writer, server, code)
        )
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        received = await messages(client, "ordered", 2 * per_writer, timeout=30)
        assert [m["data"]["n"] for m in received] == list(range(1, 2 * per_writer + 1))
        await nothing_more(client, 1)
        await client.close()


@pytest.mark.parametrize("kind", databases())
async def test_with_the_in_memory_broker_a_save_from_another_process_reaches_the_servers_pages(kind: str) -> None:
    # On PostgreSQL the writer's NOTIFY wakes the server's relay: polling is made too slow to be what delivers.
    poll = 60.0 if kind == "postgresql" else 0.2
    with server_on(kind, redis_url=None, OUTBOX_POLL_INTERVAL=poll) as server:
        client = await subscriber(server, "posts")
        await asyncio.sleep(1)  # the relay's first round (and LISTEN) are done
        done = await asyncio.to_thread(writer, server, SAVE_POST.format(content="from the shell"))
        assert done.returncode == 0, done.stderr
        (message,) = await messages(client, "posts", 1, timeout=10)
        assert message["data"]["post"]["content"] == "from the shell"
        await nothing_more(client, 1)
        await client.close()


@contextlib.contextmanager
def server_with_two_databases(kind: str, **pulse: Any) -> Iterator[LiveServer]:
    """``server_on`` with a second database "other" (a SQLite file, or a PostgreSQL database of its own), migrated
    before the server starts."""
    with database(kind) as other, tempfile.TemporaryDirectory(prefix="pulse-other-") as tmp:
        url = other.get("PULSE_LIVE_DATABASE_URL") or f"sqlite:///{tmp}/other.sqlite3"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PULSE_LIVE_DB": f"{tmp}/unused.sqlite3",
            "PULSE_LIVE_OTHER_DATABASE_URL": url,
        }
        env.pop("DATABASE_URL", None)
        migrate = [sys.executable, "-m", "django", "migrate", "--database", "other", "--noinput", "-v0"]
        subprocess.run(migrate, env=env, cwd=ROOT, check=True)
        with database(kind) as default:
            settings = {"OUTBOX_LEASE": 2.0, **pulse}
            extra = {**default, "PULSE_LIVE_OTHER_DATABASE_URL": url}
            prefix = f"outbox{uuid.uuid4().hex[:8]}"
            redis_url = f"redis://127.0.0.1:{REDIS_PORT}/0"
            with live_server(pulse=settings, redis_url=redis_url, redis_prefix=prefix, extra_env=extra) as server:
                yield server


WRITE_ON = """
from django.db import transaction
from django_pulse import pulse
with transaction.atomic(using={using!r}):
    pulse.publish_on_commit("numbers", "n", {{"db": {using!r}}}, using={using!r})
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", id="postgresql")])
async def test_a_row_on_a_second_database_is_relayed_by_the_server(kind: str) -> None:
    with server_with_two_databases(kind) as server:
        client = await subscriber(server, "numbers")
        done = await asyncio.to_thread(writer, server, WRITE_ON.format(using="other"), fault="after_commit")
        assert done.returncode == 137, done.stderr  # died after COMMIT, before publishing: the row waits on "other"
        (message,) = await messages(client, "numbers", 1, timeout=20)
        assert message["data"] == {"db": "other"}
        await nothing_more(client, 2)
        outbox = await asyncio.to_thread(backlog, server)
        assert outbox["pending"] == 0 and set(outbox["databases"]) == {"default", "other"}
        await client.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", id="postgresql")])
async def test_pulse_relay_publishes_the_rows_of_every_database_and_counts_each(kind: str) -> None:
    with server_with_two_databases(kind, OUTBOX_RELAY=False) as server:
        client = await subscriber(server, "numbers")
        for using in ("default", "other"):
            done = await asyncio.to_thread(writer, server, WRITE_ON.format(using=using), fault="after_commit")
            assert done.returncode == 137, done.stderr
        outbox = await asyncio.to_thread(backlog, server)
        assert outbox["pending"] == 2 and {db: each["pending"] for db, each in outbox["databases"].items()} == {
            "default": 1,
            "other": 1,
        }
        await asyncio.sleep(2.5)  # the dead writers' leases run out
        relay = "from django.core.management import call_command\ncall_command('pulse', 'relay', '--once', '--json')"
        done = await asyncio.to_thread(writer, server, relay)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["published"], report["pending"], sorted(report["databases"])) == (2, 0, ["default", "other"])
        received = await messages(client, "numbers", 2, timeout=10)
        assert sorted(m["data"]["db"] for m in received) == ["default", "other"]
        await nothing_more(client, 1)
        await client.close()


async def test_pulse_relay_in_the_foreground_relays_a_second_database_until_ctrl_c() -> None:
    with server_with_two_databases("sqlite", OUTBOX_RELAY=False) as server:
        client = await subscriber(server, "numbers")
        relay = subprocess.Popen(
            [sys.executable, "-m", "django", "pulse", "relay"],
            env=server.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's Ctrl-C reaches it
        )
        try:
            done = await asyncio.to_thread(writer, server, WRITE_ON.format(using="other"), fault="after_commit")
            assert done.returncode == 137, done.stderr
            (message,) = await messages(client, "numbers", 1, timeout=20)  # once the writer's lease (2 s) ends
            assert message["data"] == {"db": "other"}
            relay.send_signal(signal.SIGINT)
            out, _ = await asyncio.to_thread(relay.communicate, timeout=10)
        finally:
            relay.kill()
        assert relay.returncode == 0 and "Relaying the outbox of default, other" in out, out
        await nothing_more(client, 1)
        await client.close()
