from django.urls import path

from . import views

app_name = "billing"

urlpatterns = [
    path("usage/", views.my_usage, name="usage"),
    path("plan/", views.plan, name="plan"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/<int:pk>/", views.budget_set, name="budget_set"),
    path("rates/", views.rate_card, name="rates"),
    path("rates/<int:pk>/reset/", views.rate_reset, name="rate_reset"),
    path("notifications/", views.notifications, name="notifications"),
]
