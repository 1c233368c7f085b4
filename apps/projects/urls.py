"""The narration studio's pages, under ``/projects/`` (namespace ``projects``).

Each part of the studio keeps its routes in its own module: the project pages (list,
create, project, speakers, approvals), the chapter editor (blocks, takes, the player), the
media (cues and exports) and the pronunciation dictionaries.
"""

from django.urls import include, path

app_name = "projects"

urlpatterns = [
    path("pronunciation/", include("apps.projects.urls_dictionaries")),
    path("", include("apps.projects.urls_pages")),
    path("", include("apps.projects.urls_editor")),
    path("", include("apps.projects.urls_media")),
    path("", include("apps.projects.urls_exports")),
]
