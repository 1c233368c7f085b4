"""The billing part of a workspace export (``settings.CHORUS_EXPORT_SECTIONS``): the ledger."""

import csv
import io
from datetime import UTC

from .models import UsageEvent

# Every row of the ledger, whatever its state (reserved, settled, refunded, failed): the
# export is the workspace's record, not the spend view (which counts settled rows only).
LEDGER_COLUMNS = (
    ("id", "id"),
    ("created_at_utc", "created_at"),
    ("finished_at_utc", "finished_at"),
    ("status", "status"),
    ("member", "user__email"),
    ("personal_key_id", "api_key_id"),
    ("source", "source"),
    ("capability", "capability"),
    ("engine", "engine"),
    ("model_id", "model_id"),
    ("voice_id", "voice_id"),
    ("project", "project"),
    ("unit", "unit"),
    ("estimated_units", "estimated_units"),
    ("units", "units"),
    ("estimated_credits", "estimated_credits"),
    ("credits", "credits"),
    ("upstream_credits", "upstream_credits"),
    ("money", "money"),
    ("shadow_credits", "shadow_credits"),
    ("purpose_type", "purpose_type"),
    ("purpose_id", "purpose_id"),
    ("request_id", "request_id"),
    ("upstream_request_id", "upstream_request_id"),
    ("note", "note"),
)
CHUNK = 2000


def _cell(value):
    if value is None:
        return ""
    if hasattr(value, "astimezone"):
        return value.astimezone(UTC).isoformat()
    return value


def ledger_csv(workspace) -> bytes:
    """The workspace's ledger as CSV (UTF-8), oldest first, read from the database in chunks.

    A CSV rather than JSON: a year of a team's calls is hundreds of thousands of rows, and a
    spreadsheet opens it as it is."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([name for name, _ in LEDGER_COLUMNS])
    rows = (
        UsageEvent.objects.filter(workspace=workspace)
        .order_by("created_at", "id")
        .values_list(*[column for _, column in LEDGER_COLUMNS])
    )
    for row in rows.iterator(chunk_size=CHUNK):
        writer.writerow([_cell(value) for value in row])
    return buffer.getvalue().encode()


def export_sections(workspace) -> list[tuple[str, object]]:
    """Billing's files in a workspace export: ``billing/ledger.csv``."""
    return [("billing/ledger.csv", ledger_csv(workspace))]
