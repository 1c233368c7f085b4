"""Make sure the demo workspace and its owner exist, and print how to sign in."""

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.workspaces.services import demo_bootstrap


class Command(BaseCommand):
    help = "Create the demo workspace and its owner if missing (idempotent) and print the login."

    def handle(self, *args, **options):
        email = settings.CHORUS_ADMIN_EMAIL
        explicit = settings.CHORUS_ADMIN_PASSWORD or None
        # Without an explicit password a generated one is kept under var/ (mode 0600) so it
        # can be printed again on every start; it is never logged.
        remembered = settings.VAR_DIR / "demo-login.txt"
        demo = demo_bootstrap(email=email, password=explicit)
        if demo.password and not explicit:
            remembered.unlink(missing_ok=True)
            fd = os.open(remembered, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(demo.password + "\n")
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        if explicit:
            password_line = "the password in CHORUS_ADMIN_PASSWORD"  # noqa: S105
        elif demo.password or (settings.DEBUG and remembered.exists()):
            # Shown at every start in development; in production only when it was created.
            password_line = remembered.read_text().strip() + "   (kept in var/demo-login.txt)"
        else:
            password_line = "unchanged (see var/demo-login.txt)"  # noqa: S105
        self.stdout.write(
            "\n"
            f"  Chorus      http://{host}:{port}/\n"
            f"  Workspace   {demo.workspace.name}\n"
            f"  Sign in as  {demo.user.email}\n"
            f"  Password    {password_line}\n"
        )
