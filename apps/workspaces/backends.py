"""Authentication backend that throttles every sign-in path (the studio's and the admin's)."""

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from . import services


class ThrottledBackend(ModelBackend):
    """E-mail + password, refused while the account or address is throttled."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        email = (username or kwargs.get("email") or "").strip().lower()
        ip = services.client_ip(request) if request is not None else None
        if services.login_throttle_check(email=email, ip=ip):
            raise PermissionDenied("Too many failed sign-in attempts.")  # stops the chain
        user = super().authenticate(request, username=email, password=password, **kwargs)
        if user is None and email:
            services.login_failure_record(email=email, ip=ip)
        elif user is not None:
            services.login_success_reset(email=email)
        return user
