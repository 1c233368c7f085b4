from django.urls import path

from . import views

app_name = "voices"

urlpatterns = [
    path("", views.library, name="library"),
    path("sync/", views.library_sync, name="sync"),
    path("<int:pk>/favourite/", views.favourite, name="favourite"),
    path("<int:pk>/", views.voice_detail, name="detail"),
    path("<int:pk>/propose/", views.voice_propose, name="propose"),
    path("<int:pk>/review/", views.voice_review, name="review"),
    path("<int:pk>/notes/", views.note_add, name="note_add"),
    path("<int:pk>/tags/", views.tag_add, name="tag_add"),
    path("<int:pk>/tags/<int:tag_pk>/remove/", views.tag_remove, name="tag_remove"),
    path("<int:pk>/collections/", views.collection_add, name="collection_add"),
    path(
        "<int:pk>/collections/<int:collection_pk>/remove/",
        views.collection_remove,
        name="collection_remove",
    ),
]
