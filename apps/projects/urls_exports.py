"""Routes of the exports part of the narration studio (see urls.py): a project's exports,
made as jobs, played, downloaded and deleted. Project and export ids are public ids."""

from django.urls import path

from . import views_exports as views

EXPORTS = "<str:project_id>/exports/"
EXPORT = EXPORTS + "<str:export_id>/"

urlpatterns = [
    path(EXPORTS, views.export_list, name="exports"),
    path(EXPORTS + "new/", views.export_create, name="export_create"),
    path(EXPORT, views.export_detail, name="export_detail"),
    path(EXPORT + "download/", views.export_download, name="export_download"),
    path(EXPORT + "delete/", views.export_delete, name="export_delete"),
]
