"""Request validation and response shapes of the HTTP API (the response serializers document the schema)."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from .._conf import pulse_settings
from ..protocol import CHANNEL_RE, CHANNEL_RULE, CONNECTION_ID_RE, KB_ID_RE, ErrorCode

__all__ = [
    "ChannelsSerializer",
    "ErrorSerializer",
    "PresenceSerializer",
    "PublishBatchResponseSerializer",
    "PublishBatchSerializer",
    "PublishMessageSerializer",
    "PublishResponseSerializer",
    "TokenRequestSerializer",
    "TokenSerializer",
]

channel_validator = RegexValidator(CHANNEL_RE, CHANNEL_RULE, code=ErrorCode.INVALID_CHANNEL)
kb_id_validator = RegexValidator(KB_ID_RE, "A kbId is 1-64 characters of A-Z a-z 0-9 _ -.")


class TokenRequestSerializer(serializers.Serializer[Any]):
    userId = serializers.CharField(
        required=False,
        max_length=255,
        trim_whitespace=False,
        help_text="The client id the token is for. Required with an API key; a logged-in user gets a token for "
        "their own id (leave it out, or send that id).",
    )
    kbId = serializers.CharField(
        required=False,
        max_length=64,
        validators=[kb_id_validator],
        help_text="The app. With an API key it must be the key's app (or left out); a logged-in user may name one.",
    )
    capabilities = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(max_length=32), max_length=8),
        required=False,
        help_text="API key callers only: channel pattern -> operations (subscribe, publish, presence, history, "
        "whisper, *).",
    )
    ttl = serializers.IntegerField(
        required=False, min_value=1, max_value=7 * 86400, help_text="Lifetime in seconds (default PULSE['TOKEN_TTL'])."
    )


class TokenSerializer(serializers.Serializer[Any]):
    token = serializers.CharField()
    endpoint = serializers.CharField(help_text="Absolute ws:// or wss:// URL of the WebSocket endpoint.")
    kbId = serializers.CharField()
    clientId = serializers.CharField()
    expiresAt = serializers.IntegerField(help_text="Milliseconds since the epoch.")


class PublishMessageSerializer(serializers.Serializer[Any]):
    channel = serializers.CharField(max_length=255, trim_whitespace=False, validators=[channel_validator])
    event = serializers.CharField(
        max_length=255, trim_whitespace=False, help_text="The event name subscribers filter on."
    )
    data = serializers.JSONField(  # type: ignore[assignment]  # a field, not Serializer.data
        required=False, allow_null=True, default=None, help_text="Any JSON value."
    )
    id = serializers.CharField(
        required=False,
        max_length=255,
        trim_whitespace=False,
        help_text="Idempotency key: a publish repeating an id seen on this channel within "
        "PULSE['IDEMPOTENCY_WINDOW'] seconds is accepted and not delivered again.",
    )
    exclude = serializers.RegexField(
        CONNECTION_ID_RE,
        required=False,
        max_length=64,
        help_text="For the others only: a connection id (the browser's `realtime.connection.id`) that does not get "
        "the message live; it gets an `excluded` frame in its place (its serials stay continuous, a resume does "
        "not replay the message to it). The message is otherwise a normal one: a serial, history, every other "
        "subscriber.",
    )


class PublishBatchSerializer(serializers.Serializer[Any]):
    messages = serializers.ListField(child=PublishMessageSerializer(), allow_empty=False)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["messages"] = serializers.ListField(
            child=PublishMessageSerializer(),
            allow_empty=False,
            max_length=pulse_settings.MAX_BATCH,
            help_text="Published in this order (PULSE['MAX_BATCH'] at most).",
        )
        return fields


class PublishResponseSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()


class PublishBatchResponseSerializer(serializers.Serializer[Any]):
    ids = serializers.ListField(child=serializers.CharField())


class MemberSerializer(serializers.Serializer[Any]):
    clientId = serializers.CharField()
    connectionId = serializers.CharField(required=False)
    data = serializers.JSONField(allow_null=True)  # type: ignore[assignment]
    timestamp = serializers.IntegerField(required=False)


class PresenceSerializer(serializers.Serializer[Any]):
    channel = serializers.CharField()
    count = serializers.IntegerField(help_text="Members (connections present).")
    clientCount = serializers.IntegerField(required=False, help_text="Distinct client ids.")
    members = MemberSerializer(many=True)


class ChannelSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    subscribers = serializers.IntegerField()
    presence = serializers.IntegerField()


class ChannelsSerializer(serializers.Serializer[Any]):
    channels = ChannelSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()
