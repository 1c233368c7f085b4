"""The core's pages, named among the settings they sit with (``studio_site/urls.py`` adds
them to those namespaces): the engine under ``workspaces``, the plan sync under ``billing``."""

from django.urls import path

from . import views

workspace_patterns = [
    path("settings/engine/", views.engine_settings, name="engine"),
    path("settings/engine/test/", views.engine_test, name="engine_test"),
]

billing_patterns = [
    path("plan/sync/", views.plan_sync_now, name="plan_sync"),
]
