"""WSGI entry point (HTTP only; Chorus normally runs under Daphne, see asgi.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
application = get_wsgi_application()
