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
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ... import overview, sdk
from ...api.authentication import issue_admin_credential
from ...clients.http import PulseAPIError, PulseClient, PulseConnectionError
from ...conf import pulse_settings
from ...exceptions import PulseError
from ...models import KEY_PREFIX, ApiKey, PulseApp


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
            dest="sub", required=True, metavar="{enable,disable,status,channels,presence,publish,keys}"
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
                f"No Pulse server answers at {self._server_url(options)} (start it, e.g. 'make demo', or pass --url)."
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
        note = ""
        if remote is None:
            try:
                sdk.close_app_connections(app.kb_id)
            except PulseError as exc:
                raise CommandError(
                    f"Pulse app {app.kb_id} is disabled (new connections and publishes are refused), "
                    f"but its open connections could not be closed: {exc.message} "
                    f"[{exc.code.value}]"
                ) from None
        else:
            try:
                remote.close_connections()
            except PulseConnectionError:
                note = f" No server answers at {self._server_url(options)}, so no connections were open there."
        state = "disabled" if was_enabled else "was already disabled"
        self._emit(
            {"kbId": app.kb_id, "enabled": False, "serverAnswered": not note},
            [
                f"Pulse app {app.kb_id} {state}: new connections and publishes are refused; open connections "
                f"are being closed.{note}"
            ],
        )

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
            lines.append(f"processes:   {info['processes']}" + (f"  [{where}]" if where else ""))
        if info.get("connections") is not None:
            lines.append(f"connections: {info['connections']}")
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
