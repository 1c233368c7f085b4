"""CSV of the spend explorer, streamed in blocks: the table of a view and the raw ledger rows.

A month of a 50-member team is some 75,000 ledger rows (15 MB of CSV). Written row by row in
Python that took over a second; on PostgreSQL the rows are written by the server
(``COPY (SELECT …) TO STDOUT``) and only passed on here, in blocks of ``BLOCK`` bytes. Other
databases (SQLite, the embedded default) take the Python path; both write the same values.

Under Daphne (ASGI) Django reads a synchronous iterator whole into memory before sending it;
``CsvStream`` is also an asynchronous iterator, pulling each block in the request's own thread
(its database connection), so a year of rows is never in memory on either server.

Text that a caller chose (a voice id, a project, a model id: the API takes any) is written
with a leading ``'`` when it starts with ``= + - @`` or a tab or carriage return, so that a
spreadsheet opening the file shows it as text instead of running it as a formula.
"""

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC

from asgiref.sync import sync_to_async
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import F, Func, QuerySet, TextField

BLOCK = 64 * 1024
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# (CSV column, ledger field, kind): "text" (what a caller or the provider chose) is guarded
# against formulas, "time" is written in UTC (``utc_text``), "value" as the
# database gives it (numbers, ids, and the names Chorus itself writes: sources, capabilities).
LEDGER_COLUMNS = (
    ("id", "id", "value"),
    ("created_at_utc", "created_at", "time"),
    ("member", "user__email", "text"),
    ("personal_key_id", "api_key_id", "value"),
    ("source", "source", "value"),
    ("capability", "capability", "value"),
    ("engine", "engine", "value"),
    ("model_id", "model_id", "text"),
    ("voice_id", "voice_id", "text"),
    ("project", "project", "text"),
    ("unit", "unit", "value"),
    ("units", "units", "value"),
    ("credits", "credits", "value"),
    ("money", "money", "value"),
    ("shadow_credits", "shadow_credits", "value"),
    ("purpose_type", "purpose_type", "value"),
    ("purpose_id", "purpose_id", "value"),
    ("request_id", "request_id", "value"),
    ("upstream_request_id", "upstream_request_id", "text"),
)


def utc_text(moment) -> str:
    """A time in UTC as PostgreSQL writes a ``timestamp`` (``YYYY-MM-DD HH:MM:SS`` and the
    fraction of a second without its trailing zeros): what spreadsheets read as a date and
    time. The column's name says it is UTC."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text


def cell_text(value: str) -> str:
    """A caller's text as a spreadsheet should show it (see the module's note)."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


class CsvStream:
    """Blocks of bytes from a generator, for ``StreamingHttpResponse``: iterable (WSGI, the
    test client) and async iterable (ASGI), closed with the response."""

    def __init__(self, blocks: Iterator[bytes]):
        self.blocks = blocks

    def __iter__(self):
        return self.blocks

    async def __aiter__(self):
        pull = sync_to_async(next)  # thread-sensitive: the request's thread and connection
        while (block := await pull(self.blocks, None)) is not None:
            yield block

    def close(self) -> None:  # StreamingHttpResponse.close() calls it (in the same thread)
        self.blocks.close()


def csv_blocks(lines: Iterable[list]) -> Iterator[bytes]:
    """``lines`` written as CSV and handed on in blocks of about ``BLOCK`` bytes."""
    out = io.StringIO()
    writer = csv.writer(out)
    for line in lines:
        writer.writerow(line)
        if out.tell() >= BLOCK:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def _header() -> list[str]:
    return [name for name, _, _ in LEDGER_COLUMNS]


def _python_lines(queryset: QuerySet, chunk: int = 2000) -> Iterator[list]:
    yield _header()
    values = queryset.values_list(*[field for _, field, _ in LEDGER_COLUMNS])
    kinds = [kind for _, _, kind in LEDGER_COLUMNS]
    for row in values.iterator(chunk_size=chunk):
        yield [
            ""
            if value is None
            else utc_text(value)
            if kind == "time"
            else cell_text(value)
            if kind == "text"
            else value
            for value, kind in zip(row, kinds, strict=True)
        ]


class _UtcText(Func):
    """``utc_text`` in SQL: the ``timestamp`` in UTC, written as PostgreSQL writes one (the
    ISO date style, which psycopg needs anyway)."""

    output_field = TextField()
    template = "(%(expressions)s AT TIME ZONE 'UTC')"


class _TextCell(Func):
    """``cell_text`` in SQL: a leading quote before a text that starts like a formula."""

    output_field = TextField()
    template = (
        "CASE WHEN %(expressions)s ~ '^[-=+@\\t\\r]' "
        "THEN '''' || %(expressions)s ELSE %(expressions)s END"
    )


def _copy_blocks(queryset: QuerySet) -> Iterator[bytes]:
    """The rows written by PostgreSQL (``COPY … TO STDOUT``), gathered into blocks. The
    statement is built here, before the response starts: a query that cannot match (an id
    beyond any row's) is the header alone, not an error half-way through a 200."""
    expressions = {}
    for i, (_, field, kind) in enumerate(LEDGER_COLUMNS):
        column = F(field)
        expressions[f"csv_{i}"] = (
            _UtcText(column) if kind == "time" else _TextCell(column) if kind == "text" else column
        )
    values = queryset.annotate(**expressions).values_list(*expressions)
    head = io.StringIO()
    csv.writer(head).writerow(_header())
    try:
        sql, params = values.query.sql_with_params()
    except EmptyResultSet:
        return iter([head.getvalue().encode()])
    return _copy_stream(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params, head.getvalue())


def _copy_stream(statement: str, params, head: str) -> Iterator[bytes]:
    with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        parts, size = [head.encode()], 0
        for data in copy:
            parts.append(data)
            size += len(data)
            if size >= BLOCK:
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            yield b"".join(parts)


def ledger_blocks(queryset: QuerySet, *, server: bool | None = None) -> Iterator[bytes]:
    """The CSV of ``queryset``'s ledger rows (header first) in blocks. ``server``: written by
    PostgreSQL (the default there) or in Python (elsewhere; tests compare the two)."""
    if server is None:
        server = connection.vendor == "postgresql"
    return _copy_blocks(queryset) if server else csv_blocks(_python_lines(queryset))
