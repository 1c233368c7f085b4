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
        assert datetime.fromisoformat(record["created_at_utc"]) == event.created_at
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
