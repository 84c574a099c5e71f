"""The OpenAPI 3 schema of the HTTP API, and a fuzz run of the API against it (schemathesis): no 5xx, ever."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.test import APIClient
from schemathesis.specs.openapi.checks import status_code_conformance

from django_pulse.models import PulseApp

pytestmark = pytest.mark.django_db

SCHEMA_URL = "/pulse/schema/"


def test_schema_is_served_and_describes_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    response = APIClient().get(SCHEMA_URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "django-pulse HTTP API"
    assert set(schema["paths"]) == {
        "/pulse/token/",
        "/pulse/token/anonymous/",
        "/pulse/publish/",
        "/pulse/presence/{channel}/",
        "/pulse/channels/",
        "/pulse/status/",
        "/pulse/close-connections/",
    }
    assert schema["components"]["securitySchemes"]["pulseApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["pulseApiKey"]["description"],
    }
    publish = schema["paths"]["/pulse/publish/"]["post"]
    assert {"400", "401", "403", "413", "429", "503"} <= set(publish["responses"])
    channel = schema["components"]["schemas"]["PublishMessageRequest"]["properties"]["channel"]
    assert channel["maxLength"] == 255 and channel["pattern"]
    token = schema["paths"]["/pulse/token/"]["post"]
    assert {"pulseApiKey": []} in token["security"] and {"cookieAuth": []} in token["security"]
    # drf-spectacular reports what it cannot describe on stderr: a complete schema reports nothing.
    assert "Warning" not in capsys.readouterr().err


@pytest.mark.fuzz
@pytest.mark.timeout(600)  # CPU-bound: on a loaded machine (make test runs 4 workers on 2 cores) it took over 120 s
def test_fuzz_the_api_against_its_schema() -> None:
    """Random valid and invalid requests, with a real API key: every answer is documented and none is a 5xx.

    Each operation gets ``max_examples`` generated requests (derandomized, so a failure reproduces).
    """
    cache.clear()
    app, _ = PulseApp.objects.ensure("default")
    api_key = app.create_key("fuzz")[1]
    # Calling the WSGI app directly sends request_started/finished, whose close_old_connections would close the
    # test's database connection inside its transaction (PostgreSQL); Django's test client disconnects it too.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, get_wsgi_application())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 7
        _fuzz(operations, api_key)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fuzz(operations: list[Any], api_key: str) -> None:
    for operation in operations:

        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {api_key}"})
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
            case.validate_response(response, checks=[status_code_conformance])

        run()
