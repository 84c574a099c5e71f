from __future__ import annotations

from django.contrib import admin

from .models import Member, Post

admin.site.register(Post)
admin.site.register(Member, list_display=["name", "created_at"])
