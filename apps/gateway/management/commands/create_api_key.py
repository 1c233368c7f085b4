"""Issue a personal API key from the shell; prints only the key, for scripts."""

from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.gateway.forms import MAX_CAP
from apps.gateway.models import SCOPES
from apps.gateway.services import api_key_create
from apps.workspaces.models import Membership, Role, Workspace
from apps.workspaces.services import ActionRefused


class Command(BaseCommand):
    help = (
        "Create an API key for a member of a workspace and print only the key on stdout "
        "(it is shown once; only its hash is stored)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True, help="The member's e-mail address.")
        parser.add_argument("--workspace", required=True, help="The workspace's slug.")
        parser.add_argument("--name", required=True, help="What the key is for (≤ 100 chars).")
        parser.add_argument(
            "--scopes",
            default="",
            help=f"Comma-separated capabilities ({', '.join(SCOPES)}); empty: all of them.",
        )
        parser.add_argument("--cap", default=None, help="Monthly credit cap (a number ≥ 0).")

    def handle(self, *args, email, workspace, name, scopes, cap, **options):
        user = get_user_model().objects.filter(email__iexact=email.strip()).first()
        if user is None:
            raise CommandError(f"No user with the e-mail address {email!r}.")
        ws = Workspace.objects.filter(slug=workspace.strip()).first()
        if ws is None:
            raise CommandError(f"No workspace with the slug {workspace!r}.")
        membership = Membership.objects.filter(workspace=ws, user=user).first()
        if membership is None:
            raise CommandError(f"{user.email} is not a member of the workspace {ws.slug!r}.")
        if not membership.has_role(Role.MEMBER):
            raise CommandError(
                f"{user.email} is a {membership.get_role_display().lower()} in {ws.slug!r}: "
                "only members, managers and owners can have API keys."
            )
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("--name must have between 1 and 100 characters.")
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(SCOPES))
        if unknown:
            raise CommandError(
                f"Unknown scopes: {', '.join(unknown)}. Choose from: {', '.join(SCOPES)}."
            )
        monthly_cap = None
        if cap not in (None, ""):
            try:
                monthly_cap = Decimal(cap)
            except InvalidOperation as exc:
                raise CommandError(f"--cap must be a number, not {cap!r}.") from exc
            if not monthly_cap.is_finite() or not 0 <= monthly_cap <= MAX_CAP:
                raise CommandError(f"--cap must be a number of credits from 0 to {MAX_CAP}.")
            monthly_cap = monthly_cap.quantize(Decimal("0.001"))
        try:
            issued = api_key_create(
                workspace=ws, user=user, name=name, scopes=wanted, monthly_cap=monthly_cap
            )
        except ActionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.raw)
