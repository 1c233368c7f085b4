from django.urls import path

from . import views, views_spend

app_name = "billing"

urlpatterns = [
    path("usage/", views.my_usage, name="usage"),
    path("plan/", views.plan, name="plan"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/<int:pk>/", views.budget_set, name="budget_set"),
    path("rates/", views.rate_card, name="rates"),
    path("rates/<int:pk>/reset/", views.rate_reset, name="rate_reset"),
    path("notifications/", views.notifications, name="notifications"),
    path("spend/", views_spend.spend_page, name="spend"),
    path("spend/rows/", views_spend.spend_rows, name="spend_rows"),
    path("spend/forecast/", views_spend.spend_forecast, name="spend_forecast"),
    path("spend/table.csv", views_spend.spend_table_csv, name="spend_csv"),
    path("spend/rows.csv", views_spend.spend_rows_csv, name="spend_rows_csv"),
    path("spend/time-zone/", views_spend.time_zone_set, name="time_zone"),
]
