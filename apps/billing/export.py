"""The billing part of a workspace export (``settings.CHORUS_EXPORT_SECTIONS``): the ledger."""

from collections.abc import Iterator
from datetime import UTC

from .ledger_csv import cell_text, csv_blocks
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
# What a caller, the provider or an error chose: written with a leading quote when a
# spreadsheet would run it as a formula (``ledger_csv.cell_text``), as in the spend CSVs.
CALLER_TEXT = {"user__email", "model_id", "voice_id", "project", "upstream_request_id", "note"}


def _cell(value, column: str):
    if value is None:
        return ""
    if hasattr(value, "astimezone"):
        return value.astimezone(UTC).isoformat()
    if column in CALLER_TEXT:
        return cell_text(value)
    return value


def ledger_blocks(workspace) -> Iterator[bytes]:
    """The workspace's ledger as CSV (UTF-8), oldest first, in blocks: read from the database
    in chunks and written into the export's ZIP as it comes, so a year of a team's calls
    (hundreds of thousands of rows) is never whole in memory.

    A CSV rather than JSON: a spreadsheet opens it as it is."""
    columns = [column for _, column in LEDGER_COLUMNS]

    def lines():
        yield [name for name, _ in LEDGER_COLUMNS]
        rows = (
            UsageEvent.objects.filter(workspace=workspace)
            .order_by("created_at", "id")
            .values_list(*columns)
        )
        for row in rows.iterator(chunk_size=CHUNK):
            yield [_cell(value, column) for value, column in zip(row, columns, strict=True)]

    return csv_blocks(lines())


def export_sections(workspace) -> list[tuple[str, object]]:
    """Billing's files in a workspace export: ``billing/ledger.csv`` (written in blocks)."""
    return [("billing/ledger.csv", ledger_blocks(workspace))]
