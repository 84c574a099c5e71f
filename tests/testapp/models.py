"""Models used by the test suite."""

from __future__ import annotations
