"""Redis topologies started by tests on free loopback ports, in temporary directories, stopped afterwards.

    with sentinel_group() as group:        # 1 master + 1 replica + 3 sentinels
        group.sentinel_addresses           # [("127.0.0.1", port), ...]
        group.master.kill()                # kill -9; the sentinels promote the replica

    with redis_cluster(masters=3, replicas=1) as cluster:
        cluster.startup_nodes              # [("127.0.0.1", port), ...]

The server binary is ``PULSE_TEST_REDIS_SERVER`` (default ``redis-server`` on PATH), so the same tests run
against Valkey with ``PULSE_TEST_REDIS_SERVER=valkey-server``. The shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import free_port, stop_process, wait_for_port

SERVER = os.environ.get("PULSE_TEST_REDIS_SERVER", "redis-server")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_redis_server() -> str:
    """The server binary's path; skips (fails under CI=true) when it is not installed."""
    path = shutil.which(SERVER)
    if path is None:
        if IN_CI:
            pytest.fail(f"{SERVER} is not installed, and CI needs it for the Sentinel and Cluster tests.")
        pytest.skip(f"{SERVER} is not installed: Sentinel and Cluster tests skipped.")
    return path


def call(port: int, *args: str, timeout: float = 2.0) -> str:
    """Send one command to 127.0.0.1:port; its raw reply as text (no client-side parsing of INFO etc.)."""
    import redis

    conn = redis.Connection(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        conn.send_command(*args)
        reply = conn.read_response()
    finally:
        conn.disconnect()
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return ",".join(item.decode() if isinstance(item, bytes) else str(item) for item in reply)
    return str(reply)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took. Raises TimeoutError naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"{what} not within {timeout} s")


@dataclass
class RedisNode:
    port: int
    proc: subprocess.Popen[bytes]
    directory: Path
    log_path: Path = field(repr=False)
    command: list[str] = field(default_factory=list, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown, no last replication, connections reset."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        """Start the same server again (same port, directory and arguments: a cluster node keeps its
        nodes.conf, so it rejoins, as a replica if its master role was taken over meanwhile)."""
        assert not self.alive
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.directory
        )
        wait_for_port(self.port, timeout=10, proc=self.proc)  # type: ignore[arg-type]

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_node(directory: Path, *args: str, config: str | None = None, port: int | None = None) -> RedisNode:
    """One redis-server (or sentinel, with ``config`` and ``--sentinel``) without persistence, on loopback."""
    binary = require_redis_server()
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "server.log"
    base = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--logfile", str(log_path)]
    if config is None:
        base += ["--save", "", "--appendonly", "no"]
    command = [binary, *([config] if config else []), *base, *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=directory)
    node = RedisNode(port, proc, directory, log_path, command)
    try:
        wait_for_port(port, timeout=10, proc=proc)  # type: ignore[arg-type]
    except BaseException:
        node.stop()
        raise
    return node


@dataclass
class SentinelGroup:
    service: str
    master: RedisNode
    replicas: list[RedisNode]
    sentinels: list[RedisNode]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def master_address(self) -> tuple[str, int]:
        """The master as the first live sentinel reports it now."""
        for sentinel in self.sentinels:
            if sentinel.alive:
                import redis

                client = redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2, decode_responses=True)
                try:
                    host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                finally:
                    client.close()
                return (str(host), int(port))
        raise RuntimeError("no sentinel is running")

    def node(self, address: tuple[str, int]) -> RedisNode:
        for candidate in [self.master, *self.replicas]:
            if candidate.address == address:
                return candidate
        raise KeyError(address)

    def wait_for_new_master(self, old: tuple[str, int], timeout: float = 30.0) -> float:
        """Seconds until every sentinel names a master other than ``old`` and that node answers as master."""

        def switched() -> bool:
            address = self.master_address()
            return address != old and "role:master" in call(address[1], "INFO", "replication")

        return wait_until(switched, timeout, f"a new master of {self.service!r}")

    def wait_replicas_synced(self, timeout: float = 20.0) -> None:
        master = self.master_address()

        def synced() -> bool:
            info = call(master[1], "INFO", "replication")
            return f"connected_slaves:{len([r for r in self.replicas if r.alive])}" in info and "state=online" in info

        wait_until(synced, timeout, "replicas online")


@contextlib.contextmanager
def sentinel_group(
    *, replicas: int = 1, sentinels: int = 3, down_after_ms: int = 1000, service: str = "pulse"
) -> Iterator[SentinelGroup]:
    """1 master + ``replicas`` replicas + ``sentinels`` sentinels (quorum: a majority), all on loopback."""
    require_redis_server()
    root = Path(tempfile.mkdtemp(prefix="pulse-sentinel-"))
    nodes: list[RedisNode] = []
    try:
        master = start_node(root / "master")
        nodes.append(master)
        replica_nodes = []
        for i in range(replicas):
            replica = start_node(root / f"replica{i}", "--replicaof", "127.0.0.1", str(master.port))
            nodes.append(replica)
            replica_nodes.append(replica)
        quorum = sentinels // 2 + 1
        sentinel_nodes = []
        for i in range(sentinels):
            directory = root / f"sentinel{i}"
            directory.mkdir()
            config = directory / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {service} 127.0.0.1 {master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} {max(3000, 4 * down_after_ms)}\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            sentinel = start_node(directory, "--sentinel", config=str(config))
            nodes.append(sentinel)
            sentinel_nodes.append(sentinel)
        group = SentinelGroup(service, master, replica_nodes, sentinel_nodes)
        group.wait_replicas_synced()

        def sentinels_know_everyone() -> bool:
            for s in sentinel_nodes:
                info = call(s.port, "INFO", "sentinel")
                if f"slaves={replicas},sentinels={sentinels}" not in info:
                    return False
            return True

        wait_until(sentinels_know_everyone, 20, "sentinels discovering the replicas and each other")
        yield group
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisCluster:
    masters: list[RedisNode]
    replicas: list[RedisNode]

    @property
    def nodes(self) -> list[RedisNode]:
        return [*self.masters, *self.replicas]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [n.address for n in self.nodes]

    def node_for_slot(self, slot: int) -> RedisNode:
        """The live node serving ``slot`` as master now."""
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(Exception):
                import redis

                client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, decode_responses=True)
                try:
                    for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                        if int(start) <= slot <= int(end):
                            return self._by_port(int(primary[1]))
                finally:
                    client.close()
        raise RuntimeError("no live node answers CLUSTER SLOTS")

    def _by_port(self, port: int) -> RedisNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def wait_ok(self, timeout: float = 30.0) -> float:
        """Seconds until every live node reports cluster_state:ok with all slots served by live masters."""

        def ok() -> bool:
            for node in self.nodes:
                if node.alive:
                    info = call(node.port, "CLUSTER", "INFO")
                    if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                        return False
            return True

        return wait_until(ok, timeout, "cluster_state:ok on every node")


@contextlib.contextmanager
def redis_cluster(*, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> Iterator[RedisCluster]:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, created with redis-cli."""
    require_redis_server()
    cli = shutil.which(os.environ.get("PULSE_TEST_REDIS_CLI", "redis-cli"))
    if cli is None:
        if IN_CI:
            pytest.fail("redis-cli is not installed, and CI needs it to create a Redis Cluster.")
        pytest.skip("redis-cli is not installed: Redis Cluster tests skipped.")
    root = Path(tempfile.mkdtemp(prefix="pulse-cluster-"))
    nodes: list[RedisNode] = []
    try:
        for i in range(masters * (1 + replicas)):
            nodes.append(
                start_node(
                    root / f"node{i}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(root / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--cluster-port",
                    str(free_port()),
                    # A replica is promoted however long it was cut off (tests kill masters on purpose).
                    "--cluster-replica-validity-factor",
                    "0",
                )
            )
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in nodes],
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        roles = {n.port: _role(n.port) for n in nodes}
        cluster = RedisCluster(
            [n for n in nodes if roles[n.port] == "master"], [n for n in nodes if roles[n.port] != "master"]
        )
        cluster.wait_ok()

        def replicas_online() -> bool:
            return all("master_link_status:up" in call(r.port, "INFO", "replication") for r in cluster.replicas)

        wait_until(replicas_online, 30, "cluster replicas in sync")
        yield cluster
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _role(port: int) -> str:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        role = client.execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else str(role)
    finally:
        client.close()
