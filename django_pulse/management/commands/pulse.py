"""``manage.py pulse <sub>``: the seed's CLI (enable, disable, status, channels, presence, publish, keys).

Thin: parse, call the server SDK, print (a table for people, ``--json`` for scripts); every error is one
line and a non-zero exit (``CommandError``).

Where the state is: apps and keys live in the database, which the command reaches directly. Channels,
presence and publishing live in the broker: with Redis the command calls the SDK itself (Redis is shared by
every process); with the embedded in-memory default they live inside the running server process, so the
command asks that server over the HTTP API (``PULSE["SERVER_URL"]`` or ``--url``), authenticated with a
short-lived admin credential it signs with ``SECRET_KEY`` — nothing to paste.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ... import sdk
from ..._conf import pulse_settings
from ...api.authentication import issue_admin_credential
from ...clients.http import PulseAPIError, PulseClient, PulseConnectionError
from ...exceptions import PulseError
from ...models import KEY_PREFIX, ApiKey, OutboxMessage, PulseApp
from ...ops import overview
from ...server.app_cache import ENABLED_APP_TTL
from ...server.relay import Relay, relay_round
from ...server.runtime import get_runtime


class _ServerClient(PulseClient):
    """The HTTP client plus the two admin-only endpoints of ``manage.py pulse``."""

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "status/")
        return result

    def close_connections(self) -> Any:
        return self._request("POST", "close-connections/", {})


class Command(BaseCommand):
    help = "Manage Pulse: enable, disable, status, channels, presence, publish, keys (docs/cli.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="sub", required=True, metavar="{enable,disable,status,top,channels,presence,publish,keys,relay}"
        )

        def add(name: str, help_text: str, *, kb: bool = True, server: bool = False) -> CommandParser:
            p: CommandParser = sub.add_parser(name, help=help_text, description=help_text)
            if kb:
                p.add_argument("--kb-id", default=None, help="The app (default: PULSE['DEFAULT_KB_ID']).")
            if server:
                p.add_argument(
                    "--url",
                    default=None,
                    help="Base URL of the running server (default: PULSE['SERVER_URL']). Given, the "
                    "command goes through that server even when Redis is configured.",
                )
            p.add_argument("--json", action="store_true", help="Print JSON for scripts.")
            return p

        enable = add("enable", "Create or re-enable an app; print its kbId and a new API key (shown once).")
        enable.add_argument(
            "--quiet-if-enabled",
            action="store_true",
            help="Create no key when the app is already enabled (for scripts such as make demo).",
        )
        add(
            "disable",
            "Disable an app: new connections and publishes are refused and its open connections "
            "closed on every process.",
            server=True,
        )
        add("status", "Version, apps, backends, Redis, and live channels across processes.", kb=False, server=True)
        top = add(
            "top", "A refreshing view of processes, connections and the busiest channels (Ctrl-C stops).", server=True
        )
        top.add_argument("--interval", type=float, default=2.0, help="Seconds between refreshes (default 2).")
        top.add_argument(
            "--iterations", type=int, default=0, help="Stop after this many refreshes (default 0: until Ctrl-C)."
        )
        top.add_argument("--limit", type=int, default=15, help="How many channels to show (default 15).")
        add("channels", "Active channels with subscriber and presence counts.", server=True)
        presence = add("presence", "Members present on a channel.", server=True)
        presence.add_argument("channel")
        publish = add("publish", "Publish a message on a channel.", server=True)
        publish.add_argument("channel")
        publish.add_argument(
            "message", nargs="?", default=None, help="The message text (sent as the data); or give --data."
        )
        publish.add_argument("--event", default="message", help="Event name (default: message).")
        publish.add_argument("--data", default=None, help="The data as JSON, instead of a message text.")
        publish.add_argument(
            "--id", default=None, help="Message id: a repeat within the idempotency window is not delivered twice."
        )
        keys = add("keys", "List an app's API keys; --create, --rotate or --revoke PREFIX.")
        action = keys.add_mutually_exclusive_group()
        action.add_argument("--create", action="store_true", help="Add a key (the others stay valid).")
        action.add_argument("--rotate", action="store_true", help="Revoke every active key and create a new one.")
        action.add_argument("--revoke", metavar="PREFIX", default=None, help="Revoke the key with this prefix.")

        relay = add(
            "relay",
            "Publish the outbox's rows (durable publishes, docs/durability.md) until stopped; server processes do "
            "it too.",
            kb=False,
        )
        relay.add_argument("--once", action="store_true", help="Publish what is pending now, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = bool(options.get("json"))
        handler = getattr(self, f"_{options['sub']}")
        try:
            handler(options)
        except PulseError as exc:
            raise CommandError(f"{exc.message} [{exc.code.value}]") from None
        except PulseAPIError as exc:
            raise CommandError(f"{exc.message} [{exc.code}]") from None
        except PulseConnectionError:
            raise CommandError(
                f"No Pulse server answers at {self._server_url(options)}: without Redis, this command reaches the "
                "running server's HTTP API there. Start the server, or pass --url / set PULSE['SERVER_URL'] to "
                "where it listens, or set PULSE['REDIS_URL'] so the command reaches Redis directly."
            ) from None

    # -- output -------------------------------------------------------------------------------------------

    def _emit(self, data: Any, lines: Sequence[str]) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2, default=str))
        else:
            for line in lines:
                self.stdout.write(line)

    @staticmethod
    def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
        cells = [[str(h) for h in headers], *[["-" if v is None else str(v) for v in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        return [
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells
        ]

    # -- where the state is --------------------------------------------------------------------------------

    @staticmethod
    def _kb_id(options: dict[str, Any]) -> str:
        return str(options.get("kb_id") or pulse_settings.DEFAULT_KB_ID)

    @staticmethod
    def _server_url(options: dict[str, Any]) -> str:
        return str(options.get("url") or pulse_settings.SERVER_URL).rstrip("/")

    def _remote(self, options: dict[str, Any]) -> _ServerClient | None:
        """The running server's API when the state lives there (embedded mode, or --url); None: use the SDK."""
        if pulse_settings.REDIS_URL and not options.get("url"):
            return None
        try:
            mount = reverse("django_pulse:token")[: -len("token/")]
        except NoReverseMatch:
            raise CommandError(
                "django_pulse.urls is not in the URLconf, so the command cannot reach the server: "
                "add path('pulse/', include('django_pulse.urls'))."
            ) from None
        return _ServerClient(self._server_url(options) + mount, issue_admin_credential(self._kb_id(options)))

    @staticmethod
    def _app(kb_id: str) -> PulseApp:
        app = PulseApp.objects.filter(kb_id=kb_id).first()
        if app is None:
            raise CommandError(
                f"No Pulse app has kbId {kb_id!r}; create it with 'manage.py pulse enable --kb-id {kb_id}'."
            )
        return app

    # -- subcommands ----------------------------------------------------------------------------------------

    def _enable(self, options: dict[str, Any]) -> None:
        kb_id = self._kb_id(options)
        try:
            app, created = PulseApp.objects.ensure(kb_id)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        if not created and app.enabled and options["quiet_if_enabled"]:
            self._emit(
                {"kbId": app.kb_id, "enabled": True, "created": False, "apiKey": None},
                [f"Pulse app {app.kb_id} is enabled."],
            )
            return
        if not app.enabled:
            app.enabled = True
            app.save(update_fields=["enabled"])
        _, raw = app.create_key("pulse enable")
        self._emit(
            {"kbId": app.kb_id, "enabled": True, "created": created, "apiKey": raw},
            [
                f"Pulse enabled for app {app.kb_id}.",
                f"kbId:    {app.kb_id}",
                f"API key: {raw}   (shown once; store it now)",
            ],
        )

    def _disable(self, options: dict[str, Any]) -> None:
        app = self._app(self._kb_id(options))
        was_enabled = app.enabled
        if app.enabled:
            app.enabled = False
            app.save(update_fields=["enabled"])
        remote = self._remote(options)
        note = self._close_app_connections(app.kb_id, remote, options)
        if not note:
            # A process may have verified a token from its cache of enabled apps just before it heard of the
            # disable, and opened that connection after its connections were closed. Every such cache entry
            # was read before the save, so none outlives ENABLED_APP_TTL: wait that long and close again,
            # and when the command returns no process accepts the app's credentials.
            time.sleep(ENABLED_APP_TTL + 0.1)
            app.refresh_from_db(fields=["enabled"])
            if not app.enabled:  # (enabled again meanwhile: its new connections stay)
                note = self._close_app_connections(app.kb_id, remote, options)
        state = "disabled" if was_enabled else "was already disabled"
        self._emit(
            {"kbId": app.kb_id, "enabled": False, "serverAnswered": not note},
            [
                f"Pulse app {app.kb_id} {state}: new connections and publishes are refused; open connections "
                f"are being closed.{note}"
            ],
        )

    def _close_app_connections(self, kb_id: str, remote: _ServerClient | None, options: dict[str, Any]) -> str:
        """Close app ``kb_id``'s connections on every process: through the broker, or by asking the embedded
        server. Returns a note when no server answered (then it had no connections)."""
        if remote is None:
            try:
                sdk.close_app_connections(kb_id)
            except PulseError as exc:
                raise CommandError(
                    f"Pulse app {kb_id} is disabled (new connections and publishes are refused), "
                    f"but its open connections could not be closed: {exc.message} "
                    f"[{exc.code.value}]"
                ) from None
            return ""
        try:
            remote.close_connections()
        except PulseConnectionError:
            return f" No server answers at {self._server_url(options)}, so no connections were open there."
        return ""

    def _status(self, options: dict[str, Any]) -> None:
        remote = self._remote(options)
        info = overview.collect() if remote is None else remote.status()
        redis = info.get("redis")
        redis_line = (
            "not used (state in the server process)"
            if redis is None
            else (f"{redis['url']} " + ("answers" if redis["ok"] else f"DOES NOT ANSWER: {redis['error']}"))
        )
        lines = [
            f"django-pulse {info['version']} ({info['mode']} mode)",
            f"broker:      {info['broker']}",
            f"presence:    {info['presence']}",
            f"redis:       {redis_line}",
        ]
        if remote is not None:
            lines.append(f"server:      {self._server_url(options)} answers")
        if info.get("processes") is not None:
            where = ", ".join(
                f"{p.get('host', '?')}:{p.get('pid', '?')} ({p.get('connections', 0)})"
                for p in info.get("processList", [])
            )
            lines.append(
                f"processes:   {info['processes']}"
                + (f"  [{where}]" if where else "")
                + (f"  ({info['draining']} draining)" if info.get("draining") else "")
            )
        if info.get("connections") is not None:
            lines.append(f"connections: {info['connections']}")
        outbox = info.get("outbox")
        if outbox is not None:
            each = outbox.get("databases", {})
            per_database = ", ".join(f"{alias}: {one['pending']}/{one['dead']}" for alias, one in each.items())
            lines.append(
                f"outbox:      {outbox['pending']} pending (oldest {outbox['oldestAge']} s), "
                f"{outbox['dead']} dead letters"
                + (f" (pending/dead per database: {per_database})" if len(each) > 1 else "")
            )
        lines.append(f"channels:    {info['channels']}")
        lines.append("")
        lines += (
            self._table(
                ["APP", "ENABLED", "KEYS", "CHANNELS"],
                [[a["kbId"], "yes" if a["enabled"] else "no", a["keys"], a["channels"]] for a in info["apps"]],
            )
            if info["apps"]
            else ["No apps: run 'manage.py pulse enable'."]
        )
        self._emit(info, lines)
        if redis is not None and not redis["ok"]:
            raise CommandError(f"Redis at {redis['url']} does not answer: {redis['error']}")

    def _relay(self, options: dict[str, Any]) -> None:
        runtime = get_runtime()
        if not runtime.broker.shared:
            raise CommandError(
                "With the in-memory broker the server process relays the outbox itself (its memory holds the "
                "subscribers); 'pulse relay' needs PULSE['REDIS_URL']."
            )
        databases = OutboxMessage.objects.databases()
        if options["once"]:
            published = failed = 0
            for alias in databases:
                while True:
                    result = relay_round(runtime, using=alias)
                    if result.unavailable:
                        raise CommandError("The broker (Redis) is unavailable; the rows are kept.")
                    published, failed = published + result.published, failed + result.failed
                    if not result.busy:
                        break
            self._emit(
                {"published": published, "failed": failed, **OutboxMessage.objects.backlog()},
                [f"Published {published} outbox rows ({failed} failed) of {', '.join(databases) or 'no database'}."],
            )
            return
        self.stdout.write(f"Relaying the outbox of {', '.join(databases) or 'no database'} (Ctrl-C stops).")
        try:
            Relay(runtime).run()
        except KeyboardInterrupt:
            return

    # -- pulse top: live per-process figures ---------------------------------------------------------------------------

    def _top(self, options: dict[str, Any]) -> None:
        """Refresh every ``--interval`` s: the status's processes (connections, uptime, change since the last
        refresh) and the app's busiest channels. On a terminal each frame replaces the last; otherwise (a pipe,
        a log) frames follow each other, and ``--json`` prints one JSON object per line per frame."""
        kb_id, interval, iterations = self._kb_id(options), max(0.2, options["interval"]), options["iterations"]
        remote = self._remote(options)
        clear = not self.as_json and self.stdout.isatty()
        previous: dict[str, int] = {}
        done = 0
        try:
            while True:
                info = overview.collect() if remote is None else remote.status()
                channels = sdk.channels(kb_id=kb_id) if remote is None else remote.channels()
                channels.sort(key=lambda c: (-c["subscribers"], -c["presence"], c["name"]))
                frame = {"at": time.time(), "kbId": kb_id, "status": info, "channels": channels[: options["limit"]]}
                if self.as_json:
                    self.stdout.write(json.dumps(frame, default=str))
                else:
                    lines = self._top_lines(frame, previous, len(channels))
                    self.stdout.write(("\x1b[H\x1b[2J" if clear else "") + "\n".join(lines) + ("" if clear else "\n"))
                    self.stdout.flush()
                previous = {str(p["id"]): int(p.get("connections", 0)) for p in info.get("processList", [])}
                done += 1
                if iterations and done >= iterations:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            return

    def _top_lines(self, frame: dict[str, Any], previous: dict[str, int], total_channels: int) -> list[str]:
        info = frame["status"]
        now_ms = frame["at"] * 1000
        redis = info.get("redis")
        where = "embedded" if redis is None else (redis["url"] + (" ok" if redis["ok"] else " DOWN"))
        lines = [
            f"pulse top  {time.strftime('%H:%M:%S', time.localtime(frame['at']))}  app {frame['kbId']}  "
            f"({info['mode']} mode, {where})",
            f"processes {info.get('processes', '-')}   connections {info.get('connections', '-')}   "
            f"channels {total_channels}",
            "",
        ]
        rows = []
        for p in info.get("processList", []):
            pid, conns = str(p["id"]), int(p.get("connections", 0))
            change = "" if pid not in previous else f"{conns - previous[pid]:+d}"
            uptime = max(0, int((now_ms - int(p.get("startedAt") or now_ms)) / 1000))
            rows.append([f"{p.get('host', '?')}:{p.get('pid', '?')}", conns, change, _duration(uptime)])
        lines += self._table(["PROCESS", "CONNECTIONS", "CHANGE", "UP"], rows) if rows else ["No server process."]
        lines.append("")
        chans = frame["channels"]
        lines += (
            self._table(
                ["CHANNEL", "SUBSCRIBERS", "PRESENCE"], [[c["name"], c["subscribers"], c["presence"]] for c in chans]
            )
            if chans
            else ["No active channels."]
        )
        return lines

    def _channels(self, options: dict[str, Any]) -> None:
        kb_id = self._kb_id(options)
        remote = self._remote(options)
        channels = sdk.channels(kb_id=kb_id) if remote is None else remote.channels()
        lines = (
            self._table(
                ["CHANNEL", "SUBSCRIBERS", "PRESENCE"], [[c["name"], c["subscribers"], c["presence"]] for c in channels]
            )
            if channels
            else [f"No active channels in app {kb_id}."]
        )
        self._emit({"kbId": kb_id, "channels": channels}, lines)

    def _presence(self, options: dict[str, Any]) -> None:
        kb_id, channel = self._kb_id(options), options["channel"]
        remote = self._remote(options)
        result = sdk.presence(channel, kb_id=kb_id) if remote is None else remote.presence(channel)
        members = result.get("members", [])
        clients = result.get("clientCount", len({m.get("clientId") for m in members}))
        lines = [f"{result.get('count', len(members))} member(s) on {channel} ({clients} client(s))."]
        if members:
            lines += self._table(
                ["CLIENT ID", "CONNECTION ID", "DATA"],
                [[m.get("clientId"), m.get("connectionId"), json.dumps(m.get("data"))] for m in members],
            )
        self._emit(result, lines)

    def _publish(self, options: dict[str, Any]) -> None:
        channel, message, raw_data = options["channel"], options["message"], options["data"]
        if (message is None) == (raw_data is None):
            raise CommandError("Give the message text or --data JSON (exactly one of them).")
        data: Any = message
        if raw_data is not None:
            try:
                data = json.loads(raw_data)
            except ValueError as exc:
                raise CommandError(f"--data is not valid JSON: {exc}.") from None
        kb_id, event = self._kb_id(options), options["event"]
        remote = self._remote(options)
        try:
            if remote is None:
                message_id = sdk.publish(channel, event, data, kb_id=kb_id, id=options["id"])
            else:
                message_id = remote.publish(channel, event, data, id=options["id"])
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self._emit(
            {"id": message_id, "channel": channel, "event": event, "kbId": kb_id},
            [f"Published {message_id} on {channel} (event {event!r}, app {kb_id})."],
        )

    def _keys(self, options: dict[str, Any]) -> None:
        app = self._app(self._kb_id(options))
        if options["create"] or options["rotate"]:
            with transaction.atomic():
                key, raw = (
                    app.rotate_keys("pulse keys --rotate")
                    if options["rotate"]
                    else app.create_key("pulse keys --create")
                )
            verb = "Rotated: every other key is revoked." if options["rotate"] else "Created."
            self._emit(
                {"kbId": app.kb_id, "prefix": key.prefix, "apiKey": raw},
                [f"{verb} New API key of {app.kb_id}: {raw}   (shown once; store it now)"],
            )
            return
        if options["revoke"]:
            prefix = options["revoke"]
            if prefix.startswith(KEY_PREFIX):
                prefix = prefix[len(KEY_PREFIX) :].partition("_")[0]
            found = ApiKey.objects.filter(app=app, prefix=prefix).first()
            if found is None:
                raise CommandError(
                    f"App {app.kb_id} has no key with prefix {options['revoke']!r}; 'manage.py pulse keys' lists them."
                )
            already = not found.active
            found.revoke()
            self._emit(
                {"kbId": app.kb_id, "prefix": found.prefix, "revoked": True},
                [f"Key {found} of {app.kb_id} " + ("was already revoked." if already else "revoked.")],
            )
            return
        keys = list(app.api_keys.all())
        rows = [
            {
                "prefix": k.prefix,
                "name": k.name,
                "createdAt": k.created_at.isoformat(),
                "lastUsedAt": k.last_used_at.isoformat() if k.last_used_at else None,
                "revokedAt": k.revoked_at.isoformat() if k.revoked_at else None,
                "active": k.active,
            }
            for k in keys
        ]

        def when(value: Any) -> str:
            return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else "never"

        lines = (
            self._table(
                ["KEY", "NAME", "CREATED", "LAST USED", "STATUS"],
                [
                    [str(k), k.name, when(k.created_at), when(k.last_used_at), "active" if k.active else "revoked"]
                    for k in keys
                ],
            )
            if keys
            else [f"App {app.kb_id} has no API keys: 'manage.py pulse keys --create' makes one."]
        )
        self._emit({"kbId": app.kb_id, "keys": rows}, lines)


def _duration(seconds: int) -> str:
    """3725 -> '1h02m', 65 -> '1m05s'."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
