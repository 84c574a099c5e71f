from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("posts", views.posts_api, name="posts-api"),
    path("seed/", views.seed_page, name="seed"),
    path("private/", views.private_page, name="private"),
    path("private/api", views.private_api, name="private-api"),
    path("live/", views.live_page, name="live"),
    path("live/posts", views.live_create, name="live-create"),
]
