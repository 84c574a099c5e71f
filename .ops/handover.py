# ruff: noqa
# mypy: ignore-errors
"""Presence handover at graceful shutdown (issue 21): anchored edits, for the pre- or post-layout paths."""

import pathlib, sys

root = pathlib.Path(sys.argv[1]) / "django_pulse"
files = {p: p.read_text() for p in root.rglob("*.py")}
EDITS = [
    (
        "ended",
        """    if conn.superseded:
        return  # a newer connection continues this id (auth recover): its members stay with it
""",
        """    if conn.superseded:
        return  # a newer connection continues this id (auth recover): its members stay with it
    if presence.handing_over or code == HANDOVER_CLOSE_CODE:
        # This process is stopping (a deploy: our shutdown, or uvicorn's 1012): the members stay in the shared
        # store, held for this process, until the client continues its connection on another process (auth
        # recover adopts them, no leave and no enter) or the live processes' sweep removes them PRESENCE_GRACE s
        # after the shutdown (docs/deployment.md, "Presence across a restart").
        presence.continued_elsewhere(conn.connection_id)
        return
""",
    ),
    (
        "abrupt",
        """ABRUPT_CLOSE_CODES = frozenset({1006, int(CloseCode.HEARTBEAT_TIMEOUT)})
""",
        """ABRUPT_CLOSE_CODES = frozenset({1006, int(CloseCode.HEARTBEAT_TIMEOUT)})
# The code uvicorn closes every WebSocket with when it shuts down (clients do not send it): a handover.
HANDOVER_CLOSE_CODE = 1012
""",
    ),
    (
        "base_init",
        """        # Ended connections whose leave failed (the store was unreachable): retried by the registry's loop.
        self._failed_leaves: set[str] = set()
""",
        """        # Ended connections whose leave failed (the store was unreachable): retried by the registry's loop.
        self._failed_leaves: set[str] = set()
        # Set by a graceful shutdown with shared state: ending connections hand their members over instead of
        # leaving (issue 21, docs/deployment.md).
        self.handing_over = False
""",
    ),
    (
        "shutdown",
        """    conns = list(_live)
    if not conns:
        return 0
    await asyncio.wait([asyncio.ensure_future(conn.go_away(code, timeout / 2)) for conn in conns], timeout=timeout)
""",
        """    from .broker import get_broker
    from .presence import get_presence

    # With shared state (Redis) presence is handed over, not left (docs/deployment.md); the registry is
    # stopped even when no connection is open, so an idle process leaves `pulse status` at once.
    handover = get_broker().shared
    get_presence().handing_over = handover
    conns = list(_live)
    if conns:
        await asyncio.wait(
            [asyncio.ensure_future(conn.go_away(code, timeout / 2)) for conn in conns], timeout=timeout
        )
""",
    ),
    (
        "shutdown_stop",
        """        await asyncio.wait_for(get_registry().stop(), timeout)""",
        """        await asyncio.wait_for(get_registry().stop(handover=handover), timeout)""",
    ),
    (
        "stop_base",
        '''    async def stop(self) -> None:  # noqa: B027
        """Stop the loop (and, with Redis, unregister this process)."""''',
        '''    async def stop(self, *, handover: bool = False) -> None:  # noqa: B027
        """Stop the loop (and, with Redis, unregister this process; with ``handover``, keep its members for
        PRESENCE_GRACE s for other processes to adopt)."""''',
    ),
    (
        "stop_redis",
        '''    async def stop(self) -> None:
        """Stop the loop, drop this process's registration, and remove every member it still owns, with their
        ``leave`` events, in batches (one script per 200 members: a shutdown that runs out of time for each
        connection's own leave does not leave its members to the survivors' sweep)."""''',
        '''    async def stop(self, *, handover: bool = False) -> None:
        """Stop the loop, drop this process's registration, and remove every member it still owns, with their
        ``leave`` events, in batches (one script per 200 members: a shutdown that runs out of time for each
        connection's own leave does not leave its members to the survivors' sweep).

        With ``handover`` (a graceful shutdown, docs/deployment.md) the members stay: the process is marked
        draining and its liveness key expires after PRESENCE_GRACE s; clients that continue their connection
        on another process meanwhile take their members with them, and the live processes' sweep removes
        the rest, with their ``leave`` events, when the key has expired."""''',
    ),
    (
        "stop_redis_body",
        """        pid = self.process_id
        await asyncio.to_thread(self._unregister_sync, pid)
""",
        """        pid = self.process_id
        if handover:
            await asyncio.to_thread(self._drain_sync, pid)
            return
        await asyncio.to_thread(self._unregister_sync, pid)
""",
    ),
    (
        "drain_sync",
        """    def _unregister_sync(self, pid: str) -> None:""",
        """    def _drain_sync(self, pid: str) -> None:
        value = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "connections": 0, "startedAt": self.started_at,
             "draining": True}
        )
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key("proc", pid), value, px=max(1, int(pulse_settings.PRESENCE_GRACE * 1000)))
            pipe.delete(self.key("proctopics", pid))
            pipe.execute()

    def _unregister_sync(self, pid: str) -> None:""",
    ),
    (
        "status_sync",
        """        processes = [{"id": p, **info} for p, (info, _topics) in live.items()]
""",
        """        processes = [{"id": p, **info} for p, (info, _topics) in live.items() if not info.get("draining")]
        draining = [{"id": p, **info} for p, (info, _topics) in live.items() if info.get("draining")]
""",
    ),
    (
        "status_sync_ret",
        """            "connections": sum(int(p.get("connections", 0)) for p in processes),
            "topics": len(topics),
        }""",
        """            "connections": sum(int(p.get("connections", 0)) for p in processes),
            "topics": len(topics),
            "draining": draining,  # stopped gracefully; their members wait PRESENCE_GRACE s for adoption
        }""",
    ),
    (
        "collect",
        """                "processList": registry["processes"],
""",
        """                "processList": registry["processes"],
                "draining": len(registry.get("draining", [])),
""",
    ),
]
for name, old, new in EDITS:
    hits = [p for p, t in files.items() if old in t]
    if len(hits) != 1:
        print("EDIT", name, "anchor in", [str(h) for h in hits])
        continue
    files[hits[0]] = files[hits[0]].replace(old, new, 1)
    hits[0].write_text(files[hits[0]])
    print("EDIT", name, "->", hits[0].relative_to(root))
