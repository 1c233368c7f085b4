"""Routes of the dictionaries part of the narration studio (see urls.py), under
``/projects/pronunciation/``; a dictionary is named by its public id (its ``/v1`` id)."""

from django.urls import path

from . import views_dictionaries as views

DICTIONARY = "<str:dictionary_id>/"

urlpatterns = [
    path("", views.dictionary_list, name="dictionaries"),
    path("new/", views.dictionary_new, name="dictionary_new"),
    path(
        "projects/<str:project_id>/",
        views.project_dictionaries,
        name="project_dictionaries",
    ),
    path(DICTIONARY, views.dictionary_detail, name="dictionary"),
    path(DICTIONARY + "edit/", views.dictionary_edit, name="dictionary_edit"),
    path(DICTIONARY + "rules/add/", views.dictionary_rule_add, name="dictionary_rule_add"),
    path(DICTIONARY + "rules/remove/", views.dictionary_rule_remove, name="dictionary_rule_remove"),
    path(DICTIONARY + "archive/", views.dictionary_archive, name="dictionary_archive"),
    path(DICTIONARY + "download/", views.dictionary_download, name="dictionary_download"),
    path(DICTIONARY + "try/", views.dictionary_try, name="dictionary_try"),
]
