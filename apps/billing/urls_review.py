"""The spend review's manager pages (forecast, anomaly flags, spend settings).

No ``app_name``: the patterns are included into the ``billing`` namespace, e.g. in
``apps/billing/urls.py``: ``path("review/", include("apps.billing.urls_review"))``.
"""

from django.urls import path

from . import views_review

urlpatterns = [
    path("", views_review.review_index, name="review_index"),
    path("flags/<int:pk>/", views_review.review_decide, name="review_decide"),
    path("settings/", views_review.review_settings, name="review_settings"),
]
