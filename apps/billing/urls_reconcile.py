"""Routes of the reconciliation pages, included in the billing namespace (``billing:``)."""

from django.urls import path

from . import views_reconcile

urlpatterns = [
    path("reconcile/", views_reconcile.reconcile, name="reconcile"),
    path("reconcile/run/", views_reconcile.reconcile_run, name="reconcile_run"),
    path("reconcile/<str:day>/", views_reconcile.reconcile_day, name="reconcile_day"),
]
