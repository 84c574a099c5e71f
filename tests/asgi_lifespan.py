"""``tests.asgi`` plus ``"lifespan": pulse_lifespan``: how a project served by uvicorn or granian wires the
startup registration and graceful shutdown (docs/deployment.md)."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter

from tests.asgi import application as _base

mapping = dict(_base.application_mapping)  # tests.asgi has set Django up by now

from django_pulse.routing import pulse_lifespan  # noqa: E402

application = ProtocolTypeRouter({**mapping, "lifespan": pulse_lifespan})
