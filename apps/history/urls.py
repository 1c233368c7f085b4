from django.urls import path

from . import views

app_name = "history"

urlpatterns = [
    path("", views.history_list, name="list"),
    path("download/", views.history_bulk_download, name="bulk_download"),
    path("delete/", views.history_bulk_delete, name="bulk_delete"),
    path("<int:pk>/audio/", views.history_audio, name="audio"),
    path("<int:pk>/delete/", views.history_delete, name="delete"),
]
