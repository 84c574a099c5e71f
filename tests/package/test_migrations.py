"""The shipped migrations match the models: ``makemigrations`` in a user's project writes nothing into
site-packages, and the migration that fixed the kbId validator changes no table."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree() -> None:
    out = io.StringIO()
    # --check exits non-zero (SystemExit) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=io.StringIO())
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db(transaction=True)  # SQLite's schema editor refuses to run inside the test's atomic block
def test_validator_migration_does_not_touch_the_table() -> None:
    out = io.StringIO()
    call_command("sqlmigrate", "django_pulse", "0002", stdout=out)
    sql = "\n".join(line for line in out.getvalue().splitlines() if line and not line.startswith("--"))
    assert "ALTER" not in sql.upper() and "CREATE" not in sql.upper(), sql
