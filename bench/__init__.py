"""The django-pulse fan-out benchmark: ``python -m bench`` (see docs/performance.md)."""
