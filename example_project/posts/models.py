"""The seed's ``posts`` table, and the members of the private-messages page.

``Post`` is published through django-pulse's publish-on-save: every created post goes out on channel
``posts`` as event ``new_post`` with ``{"post": {id, user_name, content, created_at}}`` once the transaction
commits, with no publish call in the views.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import models

from django_pulse.publishers import instance_data, publishes, register

from .security import inner_html_text, refuse_markup


def post_data(post: Post) -> dict[str, Any]:
    """A post as the seed's database row: ``{id, user_name, content, created_at}`` (ISO 8601 time), its text
    safe for the seed page's ``innerHTML`` (security.py)."""
    data = instance_data(post)
    for field in ("user_name", "content"):
        data[field] = inner_html_text(data[field])
    return data


@publishes(channel="posts", created="new_post", updated=None, deleted=None, data=lambda post: {"post": post_data(post)})
class Post(models.Model):
    user_name = models.CharField(max_length=100, validators=[refuse_markup])
    content = models.TextField(max_length=2000, validators=[refuse_markup])
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.user_name}: {self.content[:40]}"


# The templates-only page (/live/) listens on its own channel, "posts.live", so the seed's "posts" carries
# exactly the seed's new_post events. A new post is rendered once with posts/_post.html and prepended to
# #live-posts; an edit (admin, shell) replaces #post-<pk>; a delete removes it. Only edits of the shown
# fields are published.
register(
    Post,
    channel="posts.live",
    template="posts/_post.html",
    action="prepend",
    target="live-posts",
    dom_id="post-{pk}",
    watch_fields=["user_name", "content"],
)


def new_private_channel() -> str:
    """A secret channel id as in the seed (24 random bytes in hex), under the ``private-`` prefix, so Pulse
    requires the authorize hook in ``posts/pulse.py`` (only its owner may subscribe) on top of the secrecy."""
    return "private-" + secrets.token_hex(24)


class Member(models.Model):
    """A user of the private-messages page (one per browser session), with a secret private channel."""

    name = models.CharField(max_length=40)
    private_channel = models.CharField(max_length=64, unique=True, default=new_private_channel, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def client_id(self) -> str:
        return f"member-{self.pk}"

    def public(self) -> dict[str, Any]:
        """What other users may know about this member (never the private channel)."""
        return {"id": self.pk, "name": self.name}
