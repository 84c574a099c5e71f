"""Pulse apps (the seed's ``kbId``) and their API keys.

An API key is shown once, when created: only its SHA-256 digest and a visible prefix are stored (keys are
32 random bytes, so a fast digest is enough; there is nothing to brute-force). Presented keys are checked in
constant time with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.utils import timezone

from .protocol import KB_ID_RE

__all__ = ["ApiKey", "Live", "OutboxMessage", "PulseApp"]

KEY_PREFIX = "pk_"
_DUMMY_HASH = hashlib.sha256(b"django-pulse:no-such-key").hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class PulseAppManager(models.Manager["PulseApp"]):
    def ensure(self, kb_id: str, *, name: str = "") -> tuple[PulseApp, bool]:
        """Get the app ``kb_id`` or create it (enabled). Returns ``(app, created)``."""
        if not KB_ID_RE.match(kb_id):
            raise ValidationError(f"kbId {kb_id!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
        return self.get_or_create(kb_id=kb_id, defaults={"name": name or kb_id})


class PulseApp(models.Model):
    """One Pulse app: a namespace of channels with its own token secret and API keys."""

    kb_id = models.CharField(
        "kbId",
        max_length=64,
        unique=True,
        validators=[RegexValidator(KB_ID_RE.pattern, "1-64 characters of A-Z a-z 0-9 _ -")],
    )
    name = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    token_secret = models.CharField(max_length=128, default=_new_secret, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PulseAppManager()

    class Meta:
        verbose_name = "Pulse app"
        ordering = ["kb_id"]

    def __str__(self) -> str:
        return self.kb_id

    def create_key(self, name: str = "") -> tuple[ApiKey, str]:
        """Create an API key; returns the row and the plaintext key, which is never shown again."""
        prefix = secrets.token_hex(4)
        raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey.objects.create(app=self, prefix=prefix, key_hash=_digest(raw), name=name)
        return key, raw

    def rotate_keys(self, name: str = "") -> tuple[ApiKey, str]:
        """Revoke every active key of this app and create a new one."""
        with transaction.atomic():
            self.api_keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
            return self.create_key(name)


class ApiKeyManager(models.Manager["ApiKey"]):
    def authenticate(self, raw: Any) -> ApiKey | None:
        """The active key matching ``raw``, or None. Constant time in the secret part."""
        prefix = _prefix_of(raw)
        key = (
            self.select_related("app").filter(prefix=prefix, revoked_at__isnull=True).first()
            if prefix is not None
            else None
        )
        return _check(key, raw)

    async def aauthenticate(self, raw: Any) -> ApiKey | None:
        prefix = _prefix_of(raw)
        key = (
            await self.select_related("app").filter(prefix=prefix, revoked_at__isnull=True).afirst()
            if prefix is not None
            else None
        )
        return _check(key, raw)


def _prefix_of(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw.startswith(KEY_PREFIX) or len(raw) > 256:
        return None
    prefix, sep, _ = raw[len(KEY_PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 8 else None


def _check(key: ApiKey | None, raw: Any) -> ApiKey | None:
    presented = _digest(raw) if isinstance(raw, str) else _DUMMY_HASH + "x"
    stored = key.key_hash if key is not None else _DUMMY_HASH
    return key if hmac.compare_digest(presented, stored) and key is not None else None


class ApiKey(models.Model):
    """An API key of a Pulse app. ``prefix`` identifies it in lists; the key itself is stored hashed."""

    app = models.ForeignKey(PulseApp, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyManager()

    class Meta:
        verbose_name = "API key"
        ordering = ["app__kb_id", "-created_at"]

    def __str__(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}_…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        """Record use; at most one write a minute per key."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


class Live(models.Model):
    """No table (``managed = False``, never queried): the admin's live view (docs/admin.md) and its
    permissions. ``view_live``: see it (staff only); ``manage_live``: use its buttons (disconnect a client,
    disable or enable an app)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_live", "Can see the live view of Pulse"),
            ("manage_live", "Can disconnect clients and disable apps from the live view"),
        ]
        verbose_name = "live view"
        verbose_name_plural = "live view"


class OutboxManager(models.Manager["OutboxMessage"]):
    def databases(self) -> list[str]:
        """The aliases of the databases whose outbox the relays publish: ``PULSE["OUTBOX_DATABASES"]``, else every
        database Django's router lets this table migrate to, except an alias that is the test mirror of another
        (``TEST["MIRROR"]``: a read replica)."""
        from django.db import connections, router

        from ._conf import pulse_settings

        named = pulse_settings.OUTBOX_DATABASES
        if named is not None:
            return named
        return [
            alias
            for alias in connections
            if not (connections.settings[alias].get("TEST") or {}).get("MIRROR")
            and router.allow_migrate_model(alias, self.model)
        ]

    def backlog(self) -> dict[str, Any]:
        """``{"pending", "oldestAge", "dead", "databases"}``: rows waiting, the age in seconds of the oldest, dead
        letters, over every relayed database, and the same per database (``{alias: {"pending", ...}}``)."""
        each = {alias: self._backlog(alias) for alias in self.databases()}
        return {
            "pending": sum(one["pending"] for one in each.values()),
            "oldestAge": max((one["oldestAge"] for one in each.values()), default=0.0),
            "dead": sum(one["dead"] for one in each.values()),
            "databases": each,
        }

    def _backlog(self, using: str) -> dict[str, Any]:
        rows = self.using(using)
        pending = rows.filter(dead=False)
        oldest = pending.order_by("id").values_list("created_at", flat=True).first()
        return {
            "pending": pending.count(),
            "oldestAge": round((timezone.now() - oldest).total_seconds(), 3) if oldest else 0.0,
            "dead": rows.filter(dead=True).count(),
        }

    def retry_dead(self, ids: Any = None) -> int:
        """Make dead letters (``ids``, or all) pending again with a fresh count of attempts; returns how many."""
        rows = self.filter(dead=True)
        if ids is not None:
            rows = rows.filter(id__in=list(ids))
        return rows.update(dead=False, attempts=0, available_at=timezone.now(), lease_token="", lease_until=None)


class OutboxMessage(models.Model):
    """A message written in the transaction of the change it announces, waiting for a relay to publish it
    (docs/durability.md). Published rows are deleted; ``dead`` rows are kept for the admin to retry."""

    kb_id = models.CharField("kbId", max_length=64)
    channel = models.CharField(max_length=255)
    event = models.CharField(max_length=255)
    # The publish's idempotency id, chosen when the row is written: a relay that published the row but died
    # before deleting it publishes it again under the same id, which the broker does not deliver twice.
    message_id = models.CharField(max_length=255)
    # The data's JSON text; empty for a live-template fragment, which ``render`` describes instead.
    data = models.TextField(blank=True)
    render = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    available_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    dead = models.BooleanField(default=False)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    objects = OutboxManager()

    class Meta:
        verbose_name = "outbox message"
        ordering = ["id"]
        indexes = [models.Index(fields=["channel", "id"], name="pulse_outbox_channel_id")]

    def __str__(self) -> str:
        return f"{self.event} on {self.channel} ({self.message_id})"
