"""Routes of the media part of the narration studio (see urls.py): a project's sound and
music cues. Project ids are public ids; a cue is named by its number."""

from django.urls import path

from . import views_media as views

CUES = "<str:project_id>/cues/"
CUE = CUES + "<int:cue_id>/"

urlpatterns = [
    path(CUES, views.cue_list, name="cues"),
    path(CUES + "estimate/", views.cue_estimate, name="cue_estimate"),
    path(CUES + "new/", views.cue_create, name="cue_create"),
    path(CUE + "progress/", views.cue_progress, name="cue_progress"),
    path(CUE + "place/", views.cue_place, name="cue_place"),
    path(CUE + "delete/", views.cue_delete, name="cue_delete"),
]
