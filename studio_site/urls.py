"""Top-level URLs.

Media files are never served directly: downloads go through views that check access.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from apps.billing import urls as billing_urls
from apps.billing import urls_reconcile, urls_review
from apps.gateway import api_urls
from apps.generation import urls as generation_urls
from apps.workspaces import urls as workspace_urls
from apps.workspaces import views as workspace_views

from . import views
from .health import healthz

# Pages that sit among an app's settings but belong elsewhere keep that app's URL names: the
# home page and the workspace's settings (several apps), the engine settings and the plan sync
# (the core's).
workspace_pages = [
    path("", views.home, name="home"),
    path("settings/", views.workspace_settings, name="settings"),
    path("settings/export/", views.workspace_export, name="export"),
    *workspace_urls.urlpatterns,
    *generation_urls.workspace_patterns,
]
billing_pages = [
    *billing_urls.urlpatterns,
    *urls_reconcile.urlpatterns,
    path("review/", include(urls_review)),
    *generation_urls.billing_patterns,
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("", include(api_urls.unserved_patterns)),
    path("", include("apps.gateway.api_urls")),
    path("accounts/login/", workspace_views.sign_in, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("invite/<str:token>/", workspace_views.invitation_accept, name="invitation_accept"),
    path("jobs/", include("apps.jobs.urls")),
    path("billing/", include((billing_pages, "billing"))),
    path("history/", include("apps.history.urls")),
    path("voices/", include("apps.voices.urls")),
    path("transcripts/", include("apps.transcripts.urls")),
    path("admin/", admin.site.urls),
    path("settings/api-keys/", include("apps.gateway.urls")),
    path("speech/", include("apps.speech.urls")),
    path("projects/", include("apps.projects.urls")),
    path("agents/", include("apps.agents.urls")),
    path("", include((workspace_pages, "workspaces"))),
    path("", include(api_urls.fallback_patterns)),
]

# A request Django cannot parse (a multipart body without its boundary, too large): a page
# that says so, with 400 (413 when too large).
handler400 = "apps.workspaces.bad_input.bad_request"
