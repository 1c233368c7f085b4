from django.urls import path

from . import views

app_name = "speech"

urlpatterns = [
    path("", views.page, name="page"),
    path("generate/", views.generate, name="generate"),
    path("takes/<str:token>/", views.take, name="take"),
    path("takes/<str:token>/audio/", views.take_stream, name="take_stream"),
    path("clips/<int:pk>/take/", views.take_audio, name="take_audio"),
]
