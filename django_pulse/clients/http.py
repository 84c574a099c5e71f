"""A small client of the Pulse HTTP API for Python backends that are not this Django project.

    from django_pulse.clients import PulseClient

    client = PulseClient("https://example.com/pulse/", api_key="pk_…")
    client.get_token("user123")                 # {"token", "endpoint", "kbId", "clientId", "expiresAt"}
    client.publish("posts", "new_post", {"post": {...}})
    client.presence("posts")                    # {"channel", "count", "members": [...]}
    client.channels()                           # [{"name", "subscribers", "presence"}, ...]

Standard library only (urllib); it imports nothing from Django. Every error answer of the API raises a
``PulseAPIError`` subclass carrying the body's ``code`` and ``message``; a server that cannot be reached
raises ``PulseConnectionError``.

    PulseClientError
    ├── PulseConnectionError   no answer (refused, DNS, timeout)
    └── PulseAPIError          an error answer: .status, .code, .message
        ├── BadRequest          400
        ├── NotAuthenticated    401 (missing, unknown or revoked key)
        ├── PermissionDenied    403 (app disabled, not allowed)
        ├── NotFound            404
        ├── PayloadTooLarge     413
        ├── Throttled           429 (.retry_after seconds)
        └── ServiceUnavailable  503 (Redis down; retry later)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .exceptions import PulseClientError, PulseConnectionError

__all__ = [
    "BadRequest",
    "NotAuthenticated",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PulseAPIError",
    "PulseClient",
    "PulseClientError",
    "PulseConnectionError",
    "ServiceUnavailable",
    "Throttled",
]


class PulseAPIError(PulseClientError):
    """The API answered with an error: ``status`` (HTTP), ``code`` and ``message`` (from the body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}, HTTP {status}]")
        self.status, self.code, self.message = status, code, message


class BadRequest(PulseAPIError):
    """400: the request was malformed or invalid (a bad channel name, a missing field)."""


class NotAuthenticated(PulseAPIError):
    """401: no API key, or one that is unknown or revoked."""


class PermissionDenied(PulseAPIError):
    """403: the key may not do this (its app is disabled, or an authorize hook refused)."""


class NotFound(PulseAPIError):
    """404: no such app, channel or endpoint."""


class PayloadTooLarge(PulseAPIError):
    """413: the body or a message is larger than the server accepts."""


class Throttled(PulseAPIError):
    """429: too many requests; ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one."""

    retry_after: float | None = None


class ServiceUnavailable(PulseAPIError):
    """503: the server cannot reach its broker (Redis) right now; retry later. For a publish, ``published`` is
    the body's answer — ``False`` (not published: a retry is delivered), ``True`` (published, its id consumed:
    a retry with the same id is not delivered again) or ``"unknown"``; None for other calls."""

    published: bool | str | None = None


_BY_STATUS: dict[int, type[PulseAPIError]] = {
    400: BadRequest,
    401: NotAuthenticated,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
    429: Throttled,
    503: ServiceUnavailable,
}


class PulseClient:
    """Client of the API mounted at ``base_url`` (e.g. ``"http://127.0.0.1:8000/pulse/"``) with ``api_key``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.api_key = api_key
        self.timeout = timeout

    def get_token(
        self, user_id: str | int, *, capabilities: dict[str, list[str]] | None = None, ttl: int | None = None
    ) -> dict[str, Any]:
        """A token for client ``user_id`` of the key's app: ``{"token", "endpoint", "kbId", "clientId", ...}``."""
        body: dict[str, Any] = {"userId": str(user_id)}
        if capabilities is not None:
            body["capabilities"] = capabilities
        if ttl is not None:
            body["ttl"] = ttl
        result: dict[str, Any] = self._request("POST", "token/", body)
        return result

    def publish(
        self, channel: str, event: str, data: Any = None, *, id: str | None = None, exclude: str | None = None
    ) -> str:
        """Publish one message; returns its id. An ``id`` makes a retry safe (delivered once). ``exclude``: a
        connection id (the browser's ``realtime.connection.id``) that does not get it live (others only)."""
        body: dict[str, Any] = {"channel": channel, "event": event, "data": data}
        if id is not None:
            body["id"] = id
        if exclude is not None:
            body["exclude"] = exclude
        return str(self._request("POST", "publish/", body)["id"])

    def publish_batch(self, messages: list[dict[str, Any]]) -> list[str]:
        """Publish ``[{"channel", "event", "data", "id"?, "exclude"?}, ...]`` in order; returns their ids."""
        return [str(i) for i in self._request("POST", "publish/", {"messages": messages})["ids"]]

    def presence(self, channel: str) -> dict[str, Any]:
        """``{"channel", "count", "clientCount", "members": [{"clientId", "data", ...}]}``."""
        result: dict[str, Any] = self._request("GET", f"presence/{urllib.parse.quote(channel, safe='')}/")
        return result

    def channels(self) -> list[dict[str, Any]]:
        """Active channels of the key's app: ``[{"name", "subscribers", "presence"}]``."""
        return list(self._request("GET", "channels/")["channels"])

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                error = _api_error(exc)
            finally:
                exc.close()  # its response holds the socket until closed (a ResourceWarning when collected)
            raise error from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PulseConnectionError(f"No Pulse server answers at {self.base_url}: {reason}.") from None


def _api_error(exc: urllib.error.HTTPError) -> PulseAPIError:
    raw = exc.read()
    code, message = f"http_{exc.code}", f"HTTP {exc.code} {exc.reason}"
    error: Any = {}
    try:
        error = json.loads(raw)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass  # not a Pulse error body (e.g. a proxy's page): keep the HTTP status line
    error_cls = _BY_STATUS.get(exc.code, PulseAPIError)
    err = error_cls(exc.code, code, message)
    if isinstance(err, Throttled):
        retry = exc.headers.get("Retry-After")
        err.retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    if isinstance(err, ServiceUnavailable) and isinstance(error, dict):
        published = error.get("published")
        err.published = published if isinstance(published, bool) or published == "unknown" else None
    return err
