"""drf-spectacular extension describing ``ApiKeyAuthentication`` in the OpenAPI schema (a bearer scheme)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

__all__ = ["ApiKeyScheme"]


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "django_pulse.api.authentication.ApiKeyAuthentication"
    name = "pulseApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <api key>` (an app's key from `manage.py pulse enable` or "
            "`pulse keys --create`).",
        }
