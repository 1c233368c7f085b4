"""Routes of the pages part of the narration studio (see urls.py): the list, a new project,
a project (header, chapters, speakers, renders), and the approvals of renders."""

from django.urls import path, register_converter

from . import views


class PublicId:
    """A project's public id (20 URL-safe characters): never a word of the studio's own
    paths (``new``, ``approvals``, ``pronunciation``), whatever order the modules are in."""

    regex = "[A-Za-z0-9_-]{16,32}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(PublicId, "project_id")

urlpatterns = [
    path("", views.project_list, name="list"),
    path("new/", views.project_new, name="new"),
    path("approvals/", views.approvals, name="approvals"),
    path("approvals/threshold/", views.threshold, name="threshold"),
    path("renders/<int:pk>/decide/", views.render_decide, name="render_decide"),
    path("approvals/jobs/<int:pk>/decide/", views.job_decide, name="job_decide"),
    path("renders/<int:pk>/cancel/", views.render_cancel, name="render_cancel"),
    path("<project_id:public_id>/", views.project_detail, name="detail"),
    path("<project_id:public_id>/edit/", views.project_edit, name="edit"),
    path("<project_id:public_id>/delete/", views.project_delete, name="delete"),
    path("<project_id:public_id>/render/", views.render_start, name="render"),
    path("<project_id:public_id>/renders/", views.project_renders, name="renders"),
    path("<project_id:public_id>/chapters/add/", views.chapter_add, name="chapter_add"),
    path("<project_id:public_id>/speakers/", views.speaker_save, name="speaker_save"),
    path(
        "<project_id:public_id>/chapters/<str:chapter_id>/move/",
        views.chapter_move,
        name="chapter_move",
    ),
    path(
        "<project_id:public_id>/chapters/<str:chapter_id>/delete/",
        views.chapter_delete,
        name="chapter_delete",
    ),
]
