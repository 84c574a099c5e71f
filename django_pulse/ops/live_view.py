"""The admin's live view (docs/admin.md): apps, channels, members and server processes, updating live through
django-pulse itself, with buttons to disconnect a client and to disable or enable an app.

- **What it shows** is ``snapshot()``: ``overview.collect(channel_lists=True)`` (the same numbers as
  ``manage.py pulse status``, across every server process) plus each process's health from the age of its
  last heartbeat. Members of a channel are read when a channel is picked (``members_view``).
- **How it updates**: the page subscribes with pulse.js to channel ``live`` of the internal app
  ``_pulse-admin`` (``django_pulse.ops.staff_channel``: staff with ``view_live`` only). The subscribe starts, on
  the server process that holds it, one watcher task (``start_watching``) that builds a snapshot every
  ``LIVE_VIEW_INTERVAL`` seconds, or sooner after a connect, disconnect or presence change on that process,
  and publishes it when it differs from the last one (or every ``KEEPALIVE`` s). The watcher ends when the
  process has had no subscriber of the channel for a few rounds; while nobody watches nothing runs and no
  signal receiver is connected.
- **Buttons** (POST, CSRF-protected, ``manage_live``): disconnect a client id (``pulse.disconnect``: every
  process closes its connections with 4005 through the control topic) and disable/enable an app (saving the
  app: disabling closes its connections on every process with 4003, as the app's admin page does).

``admin.LiveAdmin`` mounts the views under ``/admin/django_pulse/live/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .. import sdk, signals
from .._conf import pulse_settings
from ..broker.base import message_topic
from ..exceptions import PulseError
from ..models import PulseApp
from ..server.runtime import get_runtime
from . import overview
from .staff_channel import (
    MANAGE_PERMISSION,
    STAFF_CHANNEL,
    STAFF_KB_ID,
    may_watch,
    staff_client_id,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    from ..cluster.liveness import Liveness
    from ..server.runtime import Runtime

__all__ = [
    "SNAPSHOT_EVENT",
    "app_view",
    "disconnect_view",
    "members_view",
    "page_view",
    "snapshot",
    "snapshot_view",
    "start_watching",
    "token_view",
]

logger = logging.getLogger("django_pulse.ops.live_view")

SNAPSHOT_EVENT = "snapshot"
WATCHER_TASK = "pulse-live-view"
# Republish an unchanged snapshot this often (s), so heartbeat ages on the page stay current.
KEEPALIVE = 15.0
# At most one snapshot per this many seconds, however many events wake the watcher.
MIN_GAP = 0.5
# Rounds without a local subscriber of the staff channel after which the watcher ends.
IDLE_ROUNDS = 3
# Channels listed per app in one snapshot (the busiest first); the page says how many were left out.
MAX_CHANNELS = 100
# Presence members listed when a channel is picked.
MAX_MEMBERS = 500
TOKEN_TTL = 900


def _health(process: dict[str, Any], now_ms: int) -> str:
    """``ok``, ``late`` (no heartbeat for two periods: stalled, or about to be declared dead) or ``draining``."""
    if process.get("draining"):
        return "draining"
    beat = process.get("beatAt")
    if not isinstance(beat, int):
        return "ok"  # a process of an older version: its key exists, so it beat within PROCESS_TIMEOUT
    late_after = 2 * pulse_settings.PROCESS_HEARTBEAT * 1000 + 1000
    return "ok" if now_ms - beat <= late_after else "late"


def _trim(channels: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int]:
    if len(channels) <= limit:
        return channels, 0
    busiest = sorted(channels, key=lambda c: (-(c["subscribers"] + c["presence"]), c["name"]))[:limit]
    return sorted(busiest, key=lambda c: c["name"]), len(channels) - limit


def snapshot(*, max_channels: int = MAX_CHANNELS, liveness: Liveness | None = None) -> dict[str, Any]:
    """What the live view shows, across every server process: ``overview.collect(channel_lists=True)`` with
    each process's ``health`` and ``at`` (this server's clock, ms), each app's channel list cut to its
    ``max_channels`` busiest (``channelsLeftOut`` counts the rest), and ``staffKbId``. ``liveness`` as
    ``overview.collect``'s."""
    info = overview.collect(channel_lists=True, liveness=liveness)
    now = int(time.time() * 1000)
    for process in info.get("processList", []):
        process["health"] = _health(process, now)
    for process in info.get("drainingList", []):
        process["health"] = "draining"
    for app in info["apps"]:
        app["internal"] = app["kbId"] == STAFF_KB_ID
        listed, left_out = _trim(app.get("channelList") or [], max_channels)
        app["channelList"] = listed
        app["channelsLeftOut"] = left_out
    info["at"] = now
    info["staffKbId"] = STAFF_KB_ID
    return info


def _fitting_snapshot(liveness: Liveness) -> dict[str, Any]:
    """``snapshot()`` small enough to publish (``MAX_MESSAGE_SIZE``): fewer channels per app until it fits."""
    limit = pulse_settings.MAX_MESSAGE_SIZE - 1024  # room for the frame around the data
    channels = MAX_CHANNELS
    while True:
        snap = snapshot(max_channels=channels, liveness=liveness)
        if len(json.dumps(snap, separators=(",", ":")).encode()) <= limit or channels == 0:
            return snap
        channels //= 2


def _digest(snap: dict[str, Any]) -> str:
    """What changes the page: the snapshot without its clock and the heartbeat times."""
    stable = dict(snap)
    stable.pop("at", None)
    stable["processList"] = [{k: v for k, v in p.items() if k != "beatAt"} for p in snap.get("processList", [])]
    stable["drainingList"] = [{k: v for k, v in p.items() if k != "beatAt"} for p in snap.get("drainingList", [])]
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


# -- the watcher: runs in a server process while a subscriber of the staff channel is connected to it ----------

_WAKING_SIGNALS = (
    signals.client_connected,
    signals.client_disconnected,
    signals.member_entered,
    signals.member_updated,
    signals.member_left,
)


async def start_watching(sender: Any = None, **kwargs: Any) -> None:
    """``staff_channel.watch_requested``: start this process's watcher on the running loop unless it runs."""
    runtime = get_runtime()
    loop = asyncio.get_running_loop()
    for task in runtime.background_tasks:
        if task.get_name() == WATCHER_TASK and not task.done() and task.get_loop() is loop:
            return
    task = loop.create_task(_watch(runtime), name=WATCHER_TASK)
    runtime.background_tasks.add(task)
    task.add_done_callback(runtime.background_tasks.discard)


async def _watch(runtime: Runtime) -> None:
    topic = message_topic(STAFF_KB_ID, STAFF_CHANNEL)
    wake = asyncio.Event()

    async def poke(sender: Any, **kwargs: Any) -> None:
        wake.set()

    uid = f"django_pulse.ops.live_view.{id(wake)}"
    for signal in _WAKING_SIGNALS:
        signal.connect(poke, weak=False, dispatch_uid=uid)
    last_digest: str | None = None
    last_sent = 0.0
    idle = 0
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), pulse_settings.LIVE_VIEW_INTERVAL)
            wake.clear()
            if not runtime.hub.topics.get(topic):
                idle += 1
                if idle >= IDLE_ROUNDS:
                    return
                continue
            idle = 0
            try:
                snap = await database_sync_to_async(_fitting_snapshot)(runtime.liveness)
                digest = _digest(snap)
                now = time.monotonic()
                if digest != last_digest or now - last_sent >= KEEPALIVE:
                    await sdk.apublish(STAFF_CHANNEL, SNAPSHOT_EVENT, snap, kb_id=STAFF_KB_ID)
                    last_digest, last_sent = digest, now
            except Exception:  # Redis or the database away for a while: the next round tries again
                logger.warning("pulse: the live view's snapshot failed", exc_info=True)
            await asyncio.sleep(MIN_GAP)
    finally:
        for signal in _WAKING_SIGNALS:
            signal.disconnect(dispatch_uid=uid)


# -- the admin views (mounted by admin.LiveAdmin; admin_view has checked the user is active staff) -------------


def _require_view(request: HttpRequest) -> None:
    if not may_watch(request.user):
        raise PermissionDenied


def _require_manage(request: HttpRequest) -> None:
    _require_view(request)
    if not request.user.has_perm(MANAGE_PERMISSION):
        raise PermissionDenied


def _error(message: str, code: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def page_view(request: HttpRequest, model_admin: ModelAdmin[Any]) -> HttpResponse:
    """The page: its data as JSON in the page (``json_script``), rendered by ``django_pulse/admin/live.js``."""
    _require_view(request)
    PulseApp.objects.ensure(STAFF_KB_ID, name="Live view (internal)")
    base = reverse("admin:django_pulse_live_changelist")
    config = {
        "urls": {
            "snapshot": base + "snapshot/",
            "members": base + "members/",
            "token": base + "token/",
            "disconnect": base + "disconnect/",
            "app": base + "app/",
        },
        "endpoint": sdk.endpoint_url(request),
        "kbId": STAFF_KB_ID,
        "channel": STAFF_CHANNEL,
        "event": SNAPSHOT_EVENT,
        "clientId": staff_client_id(request.user),
        "canManage": request.user.has_perm(MANAGE_PERMISSION),
        "snapshot": snapshot(),
    }
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Pulse: live view",
        "opts": model_admin.model._meta,
        "config": config,
    }
    return TemplateResponse(request, "admin/django_pulse/live.html", context)


@require_GET
def snapshot_view(request: HttpRequest) -> JsonResponse:
    _require_view(request)
    return JsonResponse(snapshot())


@require_GET
def members_view(request: HttpRequest) -> JsonResponse:
    """``?kbId=&channel=``: the presence members of a channel (the first ``MAX_MEMBERS``)."""
    _require_view(request)
    kb_id, channel = request.GET.get("kbId", ""), request.GET.get("channel", "")
    try:
        result = sdk.presence(channel, kb_id=kb_id or None)
    except PulseError as exc:
        return _error(exc.message, str(exc.code), 400)
    result["kbId"] = kb_id
    result["membersLeftOut"] = max(0, len(result["members"]) - MAX_MEMBERS)
    result["members"] = result["members"][:MAX_MEMBERS]
    return JsonResponse(result)


@require_POST
def token_view(request: HttpRequest) -> JsonResponse:
    """A token for this staff user that may only subscribe to the staff channel (pulse.js's ``authUrl``)."""
    _require_view(request)
    PulseApp.objects.ensure(STAFF_KB_ID, name="Live view (internal)")
    try:
        token = sdk.get_token(
            staff_client_id(request.user),
            kb_id=STAFF_KB_ID,
            capabilities={STAFF_CHANNEL: ["subscribe"]},
            ttl=TOKEN_TTL,
            request=request,
        )
    except PulseError as exc:
        return _error(exc.message, str(exc.code), 503)
    return JsonResponse(token)


@require_POST
def disconnect_view(request: HttpRequest) -> JsonResponse:
    """``kbId``, ``clientId``: close that client's connections on every server process (4005 revoked)."""
    _require_manage(request)
    kb_id, client_id = request.POST.get("kbId", ""), request.POST.get("clientId", "").strip()
    if not client_id:
        return _error("Name the client id to disconnect.", "bad_request", 400)
    try:
        sdk.disconnect(client_id, kb_id=kb_id or None)
    except PulseError as exc:
        return _error(exc.message, str(exc.code), 400)
    logger.info("pulse: %s disconnected client %r of app %r from the live view", request.user, client_id, kb_id)
    return JsonResponse({"disconnected": client_id, "kbId": kb_id})


@require_POST
def app_view(request: HttpRequest) -> JsonResponse:
    """``kbId``, ``enabled`` (``0``/``1``): disable (closing its connections everywhere, 4003) or enable an app."""
    _require_manage(request)
    kb_id, enabled = request.POST.get("kbId", ""), request.POST.get("enabled", "")
    if enabled not in ("0", "1"):
        return _error("'enabled' must be 0 or 1.", "bad_request", 400)
    if kb_id == STAFF_KB_ID and enabled == "0":
        return _error("The live view's own app cannot be disabled from the live view.", "bad_request", 400)
    app = PulseApp.objects.filter(kb_id=kb_id).first()
    if app is None:
        return _error(f"No Pulse app has kbId {kb_id!r}.", "app_unknown", 404)
    app.enabled = enabled == "1"
    app.save(update_fields=["enabled"])  # post_save: disabling closes its connections on every process
    logger.info("pulse: %s %s app %r from the live view", request.user, "enabled" if app.enabled else "disabled", kb_id)
    return JsonResponse({"kbId": kb_id, "enabled": app.enabled})
