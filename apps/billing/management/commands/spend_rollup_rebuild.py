"""Rebuild the spend rollup from the settled ledger (after a repair, a restore, a migration)."""

from django.core.management.base import BaseCommand, CommandError

from apps.billing.rollup import rollup_rebuild
from apps.workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Delete the spend rollup (of one workspace, or all) and sum the settled usage ledger "
        "into it again; prints how many rollup rows were written."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--workspace", default=None, help="A workspace's id or slug (default: every one)."
        )

    def handle(self, *args, workspace=None, **options):
        target = None
        if workspace is not None:
            value = workspace.strip()
            found = Workspace.objects.filter(slug=value)
            if value.isdigit():
                found = Workspace.objects.filter(pk=int(value)) | found
            target = found.first()
            if target is None:
                raise CommandError(f"No workspace {value!r} (give its id or slug).")
        written = rollup_rebuild(workspace=target)
        where = f"workspace {target.pk} ({target.slug})" if target else "every workspace"
        self.stdout.write(f"{written} rollup rows written for {where}.")
