"""Who a visitor who is not logged in is, as far as the server can tell: the address the request came from (through
the proxies ``PULSE["TRUSTED_PROXIES"]`` names, and no others) and the anonymous client id bound to the visitor's
session.

An anonymous id (``anon-`` + 16 random characters) is minted by the server and kept in the visitor's Django
session: ``POST token/anonymous/`` and ``{% pulse_presence %}`` both use it, so a page's presence stream is valid
only for the visitor it was rendered for, and a visitor cannot take another's id by naming it (ids are visible
to every presence reader). Without ``SessionMiddleware`` there is nothing to bind to: each call mints a new id.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ._conf import pulse_settings

__all__ = ["ANONYMOUS_ID_RE", "SESSION_KEY", "anonymous_client_id", "client_ip"]

#: The session key holding the visitor's anonymous client id.
SESSION_KEY = "_pulse_anonymous_id"
ANONYMOUS_ID_RE = re.compile(r"\Aanon-[A-Za-z0-9_-]{16}\Z")


def anonymous_client_id(request: Any) -> str:
    """The anonymous client id of ``request``'s visitor: the one in its session, else a new one, stored there."""
    session = getattr(request, "session", None)
    if session is None:
        return "anon-" + secrets.token_urlsafe(12)
    value = session.get(SESSION_KEY)
    if not isinstance(value, str) or not ANONYMOUS_ID_RE.match(value):
        value = "anon-" + secrets.token_urlsafe(12)
        session[SESSION_KEY] = value
    return value


def client_ip(meta: Mapping[str, Any]) -> str:
    """The client's address from a request's ``META``: ``REMOTE_ADDR``, unless ``PULSE["TRUSTED_PROXIES"]`` says
    which proxies add ``X-Forwarded-For``.

    - None or 0 (the default): trust no forwarding header (anyone can send one);
    - a number N: N proxies stand in front of the server, each appending the address it saw; the client is the
      one the outermost added (as DRF's ``NUM_PROXIES``);
    - a list of addresses or networks (``"10.0.0.0/8"``): the client is the nearest address, walking back from
      ``REMOTE_ADDR`` through the header, that is not one of them.
    """
    remote = str(meta.get("REMOTE_ADDR") or "")
    trusted = pulse_settings.TRUSTED_PROXIES
    if not trusted:
        return remote
    forwarded = [part.strip() for part in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if part.strip()]
    chain = [*forwarded, remote]
    if isinstance(trusted, int):
        return chain[max(0, len(chain) - 1 - trusted)]
    networks = [ipaddress.ip_network(str(entry), strict=False) for entry in trusted]
    for address in reversed(chain):
        if not _within(address, networks):
            return address
    return chain[0]


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address (a forged header's junk): never a trusted proxy
    return any(ip in network for network in networks)
