from django.urls import path

from . import views

app_name = "voices"

urlpatterns = [
    path("", views.library, name="library"),
    path("sync/", views.library_sync, name="sync"),
    path("<int:pk>/favourite/", views.favourite, name="favourite"),
]
