"""The HTTP API views: thin adapters over the server SDK (``django_pulse.sdk``), which does the work.

Every policy (authentication, permission, throttle, parser, renderer, exception handler, schema) is set on
the views themselves, so the project's ``REST_FRAMEWORK`` settings neither change Pulse nor are changed by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from .. import __version__, sdk
from .._conf import pulse_settings
from .._visitors import anonymous_client_id, client_ip
from ..ops import metrics, overview
from ..protocol import CHANNEL_RE
from . import schema as _schema  # noqa: F401  (registers the auth scheme with drf-spectacular)
from .authentication import ApiKeyAuthentication, PulseCaller
from .exceptions import pulse_exception_handler
from .parsers import StrictJSONParser
from .permissions import HasApiKey, IsPulseAdmin, MayRequestToken, token_capabilities
from .serializers import (
    ChannelsSerializer,
    ErrorSerializer,
    PresenceSerializer,
    PublishBatchResponseSerializer,
    PublishBatchSerializer,
    PublishMessageSerializer,
    PublishResponseSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from .throttling import ApiKeyThrottle

__all__ = [
    "AnonymousTokenView",
    "ChannelsView",
    "CloseConnectionsView",
    "MetricsView",
    "PresenceView",
    "PublishView",
    "SchemaView",
    "StatusView",
    "TokenView",
]


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description='`{"error": {"code", "message"}}`') for code in codes}


class PulseAPIView(APIView):
    """Base of the Pulse views: API key auth, per-key throttle, JSON in and out, Pulse error bodies."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    throttle_classes = [ApiKeyThrottle]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    schema = AutoSchema()

    def get_exception_handler(self) -> Any:
        return pulse_exception_handler

    @property
    def caller(self) -> PulseCaller:
        auth = self.request.auth
        assert isinstance(auth, PulseCaller)  # guaranteed by the permission classes
        return auth

    def body(self) -> dict[str, Any]:
        data = self.request.data
        if not isinstance(data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        return data


@extend_schema(
    request=TokenRequestSerializer,
    responses={200: TokenSerializer, **_errors(400, 401, 403, 404, 429)},
    description="With `Authorization: Bearer <api key>`: a token for `userId` in the key's app. "
    "With a logged-in session (and its CSRF token): a token for that user's id. "
    "`PULSE['TOKEN_PERMISSION']` may refuse or set the capabilities.",
)
class TokenView(PulseAPIView):
    """Issue a token for a client: for the logged-in Django user, or for ``userId`` with an API key."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [MayRequestToken]

    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=self.body())
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        auth = request.auth
        if isinstance(auth, PulseCaller):
            user_id = body.get("userId")
            if not user_id:
                raise exceptions.ValidationError({"userId": ["This field is required with an API key."]})
            if body.get("kbId", auth.kb_id) != auth.kb_id:
                raise exceptions.PermissionDenied(f"This API key belongs to app {auth.kb_id!r}, not {body['kbId']!r}.")
            kb_id: str | None = auth.kb_id
        else:
            user_id = str(request.user.pk)
            if "userId" in body and body["userId"] != user_id:
                raise exceptions.PermissionDenied("A logged-in user gets a token for their own id only.")
            if "capabilities" in body:
                raise exceptions.PermissionDenied(
                    "Only API key callers choose capabilities; the project's "
                    "PULSE['TOKEN_PERMISSION'] hook decides them for users."
                )
            kb_id = body.get("kbId")
        capabilities = token_capabilities(request, user_id)
        if isinstance(auth, PulseCaller) and "capabilities" in body:
            capabilities = body["capabilities"]
        try:
            result = sdk.get_token(
                user_id,
                kb_id=kb_id,
                capabilities=capabilities,
                ttl=body.get("ttl"),
                request=request,
                key_id=auth.api_key.prefix if isinstance(auth, PulseCaller) and auth.api_key is not None else None,
            )
        except ValueError as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}) from None
        return Response(result)


class _AnonymousTokenThrottle(SimpleRateThrottle):
    """``PULSE["LIVE_ANONYMOUS_RATE"]`` per IP address, the address seen through ``PULSE["TRUSTED_PROXIES"]``
    only (DRF's own ``get_ident`` believes any ``X-Forwarded-For`` unless ``NUM_PROXIES`` is set)."""

    scope = "pulse-anonymous"

    def get_rate(self) -> str | None:
        return pulse_settings.LIVE_ANONYMOUS_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return f"pulse:throttle:anon:{client_ip(request.META)}"


@extend_schema(
    request=None,
    responses={200: TokenSerializer, **_errors(403, 429)},
    description="For live templates (`{% pulse_script %}` on a page seen by a visitor who is not logged in): "
    "a token with no capabilities for the visitor's anonymous client id (`anon-...`), minted by the server "
    "and kept in the visitor's session (a `clientId` in the body is ignored). It opens only the signed "
    "streams of pages the server rendered. Off with `PULSE['LIVE_ANONYMOUS'] = False`.",
)
class AnonymousTokenView(PulseAPIView):
    """A capability-less token for a visitor who is not logged in (live templates)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [_AnonymousTokenThrottle]

    def post(self, request: Request) -> Response:
        if not pulse_settings.LIVE_ANONYMOUS:
            raise exceptions.PermissionDenied("Anonymous live pages are off (PULSE['LIVE_ANONYMOUS']).")
        # The id is the session's, never the body's: an id is visible to every presence reader, and naming it
        # must not make it yours.
        return Response(sdk.get_token(anonymous_client_id(request), capabilities={}, request=request))


_PUBLISH_REQUEST = PolymorphicProxySerializer(
    component_name="PublishRequest",
    serializers=[PublishMessageSerializer, PublishBatchSerializer],
    resource_type_field_name=None,
)
_PUBLISH_RESPONSE = PolymorphicProxySerializer(
    component_name="PublishResult",
    serializers=[PublishResponseSerializer, PublishBatchResponseSerializer],
    resource_type_field_name=None,
)


@extend_schema(
    request=_PUBLISH_REQUEST,
    responses={200: _PUBLISH_RESPONSE, **_errors(400, 401, 403, 413, 429, 503)},
    description="`{channel, event, data, id?, exclude?}` -> `{id}`, or `{messages: [...]}` (at most "
    "`PULSE['MAX_BATCH']`, published in order) -> `{ids}`. `exclude`: a connection id that does not get the "
    "message live (others only).",
)
class PublishView(PulseAPIView):
    """Publish one message, or a batch published in order."""

    publishes = True  # a 503 body says whether the message was published (api.exceptions)

    def post(self, request: Request) -> Response:
        with metrics.publish_source("http"):
            return self._publish()

    def _publish(self) -> Response:
        body = self.body()
        if "messages" in body:
            batch = PublishBatchSerializer(data=body)
            batch.is_valid(raise_exception=True)
            messages = batch.validated_data["messages"]
            with _refused_as_bad_request():
                ids = sdk.publish_batch(
                    [{k: m[k] for k in ("channel", "event", "data", "id", "exclude") if k in m} for m in messages],
                    kb_id=self.caller.kb_id,
                )
            return Response({"ids": ids})
        single = PublishMessageSerializer(data=body)
        single.is_valid(raise_exception=True)
        message = single.validated_data
        with _refused_as_bad_request():
            message_id = sdk.publish(
                message["channel"],
                message["event"],
                message.get("data"),
                kb_id=self.caller.kb_id,
                id=message.get("id"),
                exclude=message.get("exclude"),
            )
        return Response({"id": message_id})


@contextmanager
def _refused_as_bad_request() -> Iterator[None]:
    """The SDK's ``ValueError`` (data it cannot encode: a lone surrogate, ``inf``) is the caller's fault: 400."""
    try:
        yield
    except (ValueError, RecursionError) as exc:
        raise exceptions.ValidationError(
            {"non_field_errors": [str(exc) or "The message cannot be encoded as JSON."]}
        ) from None


@extend_schema(
    parameters=[
        OpenApiParameter(
            "channel",
            str,
            OpenApiParameter.PATH,
            pattern=CHANNEL_RE.pattern,
            description="The channel name (docs/protocol.md#channels).",
        )
    ],
    responses={200: PresenceSerializer, **_errors(400, 401, 403, 429, 503)},
)
class PresenceView(PulseAPIView):
    """The members present on a channel of the key's app."""

    def get(self, request: Request, channel: str) -> Response:
        return Response(sdk.presence(channel, kb_id=self.caller.kb_id))


@extend_schema(responses={200: ChannelsSerializer, **_errors(401, 403, 429, 503)})
class ChannelsView(PulseAPIView):
    """The active channels of the key's app, with subscriber and presence counts."""

    def get(self, request: Request) -> Response:
        return Response({"channels": sdk.channels(kb_id=self.caller.kb_id)})


@extend_schema(responses={200: dict, **_errors(401, 403)}, description="Admin credential of `manage.py pulse` only.")
class StatusView(PulseAPIView):
    """``manage.py pulse status`` against an embedded server: the state as this process sees it."""

    permission_classes = [IsPulseAdmin]

    def get(self, request: Request) -> Response:
        return Response(overview.collect())


@extend_schema(
    request=None, responses={200: dict, **_errors(401, 403)}, description="Admin credential of `manage.py pulse` only."
)
class CloseConnectionsView(PulseAPIView):
    """``manage.py pulse disable`` against an embedded server: close the app's open connections."""

    permission_classes = [IsPulseAdmin]

    def post(self, request: Request) -> Response:
        sdk.close_app_connections(self.caller.kb_id)
        return Response({"kbId": self.caller.kb_id, "closing": True})


class IsMetricsReader(BasePermission):
    """Any API key (another app's key: that app's series only) or the admin credential, or a logged-in staff
    user."""

    message = "Send 'Authorization: Bearer <api key>', or log in as staff."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return isinstance(request.auth, PulseCaller) or bool(user and user.is_authenticated and user.is_staff)


@extend_schema(exclude=True)  # Prometheus text, not JSON: docs/metrics.md describes it
class MetricsView(PulseAPIView):
    """This process's Prometheus metrics (``django_pulse.ops.metrics``); scrape every server process."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsMetricsReader]
    throttle_classes = []

    def get(self, request: Request) -> HttpResponse:
        # Another app's API key reads that app's series only (the processes serve every app); the project's own
        # app's keys (what Prometheus scrapes with), the admin credential and staff read everything.
        caller = request.auth
        scoped = isinstance(caller, PulseCaller) and not caller.admin and caller.kb_id != pulse_settings.DEFAULT_KB_ID
        app = caller.kb_id if scoped and isinstance(caller, PulseCaller) else None
        body, content_type = overview.metrics_exposition(app=app)
        return HttpResponse(body, content_type=content_type)


_SCHEMA_VERSION = re.compile(r"\A[A-Za-z0-9._-]{0,64}\Z")


class SchemaView(SpectacularJSONAPIView):
    """The OpenAPI 3 schema of the Pulse API alone, with paths under wherever ``django_pulse.urls`` is mounted."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    serve_public = True
    custom_settings = {
        "TITLE": "django-pulse HTTP API",
        "DESCRIPTION": "Tokens, publishing, presence and channels of django-pulse. Authenticate with "
        '`Authorization: Bearer <api key>`. Errors are `{"error": {"code", "message"}}`.',
        "VERSION": __version__,
        "COMPONENT_SPLIT_REQUEST": True,
    }

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        version = request.query_params.get("version")
        if version is not None and not _SCHEMA_VERSION.match(version):
            # drf-spectacular puts the version into the Content-Disposition header: a newline there was a 500.
            raise exceptions.ValidationError({"version": ["A version is at most 64 characters of A-Z a-z 0-9 . _ -."]})
        match = request.resolver_match
        route = match.route if match is not None else "schema/"
        mount = route[: len(route) - len("schema/")] if route.endswith("schema/") else ""
        self.patterns = [path(mount, include("django_pulse.api.urls"))]
        response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response

    def get_exception_handler(self) -> Any:
        return pulse_exception_handler
