"""The site's URLs with the reconciliation pages in the billing namespace (until the site's
own ``studio_site/urls.py`` includes ``apps.billing.urls_reconcile``)."""

from django.urls import include, path

from apps.billing import urls_reconcile
from studio_site import urls as site

urlpatterns = [
    # First, so this "billing" namespace is the one reverse() reads.
    path("billing/", include(([*urls_reconcile.urlpatterns, *site.billing_pages], "billing"))),
    *site.urlpatterns,
]
