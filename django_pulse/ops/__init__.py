"""Internal: the operator's view of a running installation (the ``pulse status`` overview, the admin's live
view and its staff channel, Prometheus metrics). Nothing here is public API: users reach it through
``manage.py pulse status``, the admin and ``GET <mount>/metrics/`` (docs/cli.md, docs/admin.md,
docs/metrics.md), never by importing it."""
