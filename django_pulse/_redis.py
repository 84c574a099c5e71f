"""Helpers shared by the Redis backends (broker, presence, cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["close_with_loop"]


async def _close_on_cancel(client: Any) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose()


def close_with_loop(client: Any) -> asyncio.Task[None]:
    """Close the asyncio Redis ``client`` when the running loop winds down (its tasks are cancelled then), so no
    connection is left for the garbage collector to warn about. Cancel the returned task to close it earlier."""
    return asyncio.get_running_loop().create_task(_close_on_cancel(client), name="django-pulse redis client guard")
