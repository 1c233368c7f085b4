from django.urls import path

from . import views

app_name = "gateway"

urlpatterns = [
    path("", views.keys, name="keys"),
    path("<int:pk>/revoke/", views.revoke, name="revoke"),
]
