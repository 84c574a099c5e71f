"""``manage.py pulse <sub>``: the seed's CLI (enable, disable, status, channels, presence, publish, keys)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import pulse_settings
from ...models import PulseApp


class Command(BaseCommand):
    help = "Manage Pulse apps: enable, disable, status, channels, presence, publish, keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="sub", required=True)
        enable = sub.add_parser("enable", help="Create or re-enable an app; print its kbId and a new API key.")
        enable.add_argument("--kb-id", default=None)
        enable.add_argument("--quiet-if-enabled", action="store_true",
                            help="Print nothing and create no key when the app is already enabled.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sub"] == "enable":
            self._enable(options)
        else:  # pragma: no cover - argparse rejects unknown subcommands
            raise CommandError(f"Unknown subcommand {options['sub']!r}.")

    def _enable(self, options: dict[str, Any]) -> None:
        kb_id = options["kb_id"] or pulse_settings.DEFAULT_KB_ID
        try:
            app, created = PulseApp.objects.ensure(kb_id)
        except Exception as exc:
            raise CommandError(str(exc)) from None
        if not created and app.enabled and options["quiet_if_enabled"]:
            self.stdout.write(f"Pulse app {app.kb_id} is enabled.")
            return
        if not app.enabled:
            app.enabled = True
            app.save(update_fields=["enabled"])
        _, raw = app.create_key("pulse enable")
        self.stdout.write(f"Pulse enabled for app {app.kb_id}.")
        self.stdout.write(f"kbId:    {app.kb_id}")
        self.stdout.write(f"API key: {raw}   (shown once; store it now)")
