"""CSV of the spend explorer: the table as shown, parsed back, equals the page's table; the raw
ledger CSV equals the settled ledger rows of the filter; both stream with clear names."""

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.billing.models import UsageEvent, UsageStatus

from .test_spend_explorer import at_days_ago, ledger, range_of, table_of  # noqa: F401


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response.streaming  # a StreamingHttpResponse: never the whole file in memory
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.usefixtures("ledger")
@pytest.mark.parametrize(
    "params",
    [
        {"by": "member", "period": "day"},
        {"by": "voice", "period": "week"},
        {"by": "project", "period": "month", "measure": "money"},
        {"by": "engine", "period": "week", "engine": "local"},
        {"by": "none", "period": "day", "source": "api"},
    ],
)
def test_the_table_csv_parsed_back_equals_the_table_on_the_page(
    client_as, owner, workspace, params
):
    start, end = range_of()
    params = {**params, "from": start.isoformat(), "to": end.isoformat()}
    client = client_as(owner)
    html = client.get("/billing/spend/", params).content.decode()
    page = table_of(html)
    labels = re.findall(r'<tr data-row="[^"]*"><th scope="row">(?:<a [^>]*>)?([^<]+)<', html)
    response = client.get("/billing/spend/table.csv", params)
    rows = _csv(response)
    header, body = rows[0], rows[1:]
    buckets = re.findall(r'<th scope="col" data-bucket="([\d-]+)">', html)
    assert [h.split(" ")[0] for h in header[1 : 1 + len(buckets)]] == buckets
    assert [r[0] for r in body] == [label.replace("&#x27;", "'") for label in labels]
    for (value, shown), row in zip(page.items(), body, strict=True):
        n = len(shown["cells"])
        assert [Decimal(c) for c in row[1 : 1 + n]] == shown["cells"], value
        assert Decimal(row[1 + n]) == shown["credits"]
        assert Decimal(row[2 + n]) == shown["money"]
    assert body[-1][0] == "Total"
    by = params["by"] if params["by"] != "none" else "total"
    assert response["Content-Disposition"] == (
        f'attachment; filename="spend-{workspace.slug}-by-{by}-per-{params["period"]}-'
        f'{start.isoformat()}-to-{end.isoformat()}.csv"'
    )


@pytest.mark.usefixtures("ledger")
def test_the_raw_csv_equals_the_settled_ledger_rows_of_the_filter(client_as, owner, workspace):
    start, end = range_of()
    params = {"from": start.isoformat(), "to": end.isoformat(), "capability": "tts"}
    response = client_as(owner).get("/billing/spend/rows.csv", params)
    rows = _csv(response)
    header, body = rows[0], rows[1:]
    expected = UsageEvent.objects.filter(
        workspace=workspace,
        status=UsageStatus.SETTLED,
        capability="tts",
        created_at__gte=datetime(start.year, start.month, start.day, tzinfo=UTC),
    ).order_by("created_at", "id")
    assert len(body) == expected.count() > 3
    for line, event in zip(body, expected, strict=True):
        record = dict(zip(header, line, strict=True))
        assert int(record["id"]) == event.pk
        assert datetime.fromisoformat(record["created_at_utc"]).replace(tzinfo=UTC) == (
            event.created_at
        )
        assert record["member"] == (event.user.email if event.user else "")
        assert record["personal_key_id"] == (str(event.api_key_id) if event.api_key_id else "")
        assert Decimal(record["credits"]) == event.credits
        assert Decimal(record["money"]) == event.money
        assert record["shadow_credits"] == (
            str(event.shadow_credits) if event.shadow_credits is not None else ""
        )
        for name in ("capability", "engine", "model_id", "voice_id", "project", "source"):
            assert record[name] == getattr(event, name)
    # The refunded call of the fixture is not in it (it charged nothing).
    assert all(Decimal(line[header.index("credits")]) != 500 for line in body)
    assert "ledger-" in response["Content-Disposition"]


@pytest.mark.usefixtures("ledger")
def test_the_raw_csv_of_one_cell_is_that_cells_rows(client_as, owner, workspace):
    day = at_days_ago(0).date().isoformat()
    client = client_as(owner)
    params = {"from": day, "to": day, "bucket": day}
    rows = _csv(client.get("/billing/spend/rows.csv", params))
    page = client.get("/billing/spend/rows/", params).content.decode()
    assert [int(r[0]) for r in rows[1:]] == [
        int(i) for i in re.findall(r'data-event="(\d+)"', page)
    ]


def _parse(blocks) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(blocks).decode())))


@pytest.fixture
def hostile_rows(workspace, owner):
    """Calls whose caller-chosen text is awkward in a CSV: separators, quotes, a newline,
    unicode, and text a spreadsheet would run as a formula."""
    from .test_spend_explorer import spent

    texts = ['a,b "quoted"', "two\nlines", "Zoë — 声", '=HYPERLINK("http://x")', "+1", "@SUM(A1)"]
    for n, text in enumerate(texts):
        spent(workspace, owner, at=at_days_ago(n), credits=n + 1, voice_id=text, project=text[:60])
    return texts


def test_every_ledger_column_of_the_raw_csv_equals_the_row(
    client_as, owner, workspace, hostile_rows
):
    from apps.billing.ledger_csv import LEDGER_COLUMNS

    start, end = range_of()
    response = client_as(owner).get(
        "/billing/spend/rows.csv", {"from": start.isoformat(), "to": end.isoformat()}
    )
    rows = _csv(response)
    header, body = rows[0], rows[1:]
    assert header == [name for name, _, _ in LEDGER_COLUMNS]
    events = list(
        UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
        .select_related("user")
        .order_by("created_at", "id")
    )
    assert len(body) == len(events) == len(hostile_rows)
    for line, event in zip(body, events, strict=True):
        record = dict(zip(header, line, strict=True))
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,5}[1-9])?", record["created_at_utc"]
        )
        assert datetime.fromisoformat(record["created_at_utc"]).replace(tzinfo=UTC) == (
            event.created_at
        )
        for name in ("units", "credits", "money", "shadow_credits"):
            value = getattr(event, name)
            assert record[name] == ("" if value is None else str(value)), name
        for name in ("unit", "purpose_type", "purpose_id", "request_id", "upstream_request_id"):
            assert record[name] == getattr(event, name), name
        assert record["member"] == event.user.email
    voices = [dict(zip(header, line, strict=True))["voice_id"] for line in body]
    # Read back exactly, but what a spreadsheet would run as a formula starts with a quote.
    assert sorted(voices) == sorted(["'" + t if t[0] in "=+-@" else t for t in hostile_rows])


def test_the_server_written_csv_equals_the_python_written_one(workspace, owner, hostile_rows):
    """On PostgreSQL the rows are written by ``COPY``; elsewhere in Python. Both write the
    same values (the Python path is what SQLite, the embedded default, serves)."""
    from django.db import connection

    from apps.billing.ledger_csv import ledger_blocks

    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's: on SQLite only the Python path exists")
    rows = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED).order_by(
        "created_at", "id"
    )
    server = _parse(ledger_blocks(rows, server=True))
    python = _parse(ledger_blocks(rows, server=False))
    assert len(server) == len(hostile_rows) + 1
    assert server == python


def test_the_csv_comes_in_blocks_and_streams_under_asgi_too(
    monkeypatch, workspace, owner, hostile_rows
):
    """Blocks of about ``BLOCK`` bytes, whichever way it is read; an ASGI server reads it as
    an async iterator (a sync one Django would read whole into memory first); a stream
    closed half-way leaves the connection usable."""
    from asgiref.sync import async_to_sync
    from django.db import connection

    from apps.billing import ledger_csv

    monkeypatch.setattr(ledger_csv, "BLOCK", 200)
    rows = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED).order_by(
        "created_at", "id"
    )
    blocks = list(ledger_csv.CsvStream(ledger_csv.ledger_blocks(rows)))
    assert len(blocks) > 3

    async def read_async():
        return [block async for block in ledger_csv.CsvStream(ledger_csv.ledger_blocks(rows))]

    assert async_to_sync(read_async)() == blocks

    stream = ledger_csv.CsvStream(ledger_csv.ledger_blocks(rows))
    next(iter(stream))
    stream.close()  # the client went away after the first block
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    assert UsageEvent.objects.filter(workspace=workspace).count() == len(hostile_rows)


def test_the_table_csv_guards_labels_against_formulas(client_as, owner, workspace, hostile_rows):
    start, end = range_of()
    rows = _csv(
        client_as(owner).get(
            "/billing/spend/table.csv",
            {"by": "voice", "from": start.isoformat(), "to": end.isoformat()},
        )
    )
    labels = [r[0] for r in rows[1:-1]]
    assert '\'=HYPERLINK("http://x")' in labels and "'+1" in labels
    assert "two\nlines" in labels and 'a,b "quoted"' in labels


def test_times_are_written_in_utc_as_the_database_writes_them():
    from datetime import timedelta, timezone

    from apps.billing.ledger_csv import utc_text

    berlin = timezone(timedelta(hours=2))
    assert utc_text(datetime(2026, 7, 1, 1, 30, tzinfo=berlin)) == "2026-06-30 23:30:00"
    assert utc_text(datetime(2026, 7, 1, 1, 30, 5, 120000, tzinfo=UTC)) == "2026-07-01 01:30:05.12"
    assert utc_text(datetime(2026, 7, 1, 1, 30, 5, 7, tzinfo=UTC)) == "2026-07-01 01:30:05.000007"
