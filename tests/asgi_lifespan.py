"""``tests.asgi``, named for the tests that run uvicorn or granian with the lifespan on: the helper-built
application routes ``"lifespan": pulse_lifespan`` itself (docs/deployment.md)."""

from __future__ import annotations

from tests.asgi import application

__all__ = ["application"]
