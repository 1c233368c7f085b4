"""The spend rollups: the settled ledger summed per UTC hour and every dimension at once
(``SpendRollup``), and per UTC day and one dimension at a time (``SpendDay``: nine rows a
settled call adds to, one per dimension and a "total"; what an unfiltered explorer view reads).

Two ways in, written from the same column expressions so they cannot disagree:

- live: ``services`` settles a row and adds it to both rollups in the same transaction —
  on PostgreSQL in the settling statement itself (``settle_sql``: the conditional UPDATE in
  a CTE feeding two upserts, so a row that was not still reserved adds nothing), elsewhere as
  two more statements reading the settled row (``row_upsert_sql``, ``day_upsert_sql``)
  inside ``atomic()``;
- ``rollup_rebuild``: deletes a workspace's rollups (or all of them) and sums the settled
  ledger again with GROUP BY (``manage.py spend_rollup_rebuild``, migration 0005).

Both take every value from the stored ledger row (never from a Python copy of it) and the
hour from ``hour_sql``: the row's ``created_at`` truncated to the UTC hour, by the database,
in one expression per vendor. The upsert adds to an existing row
(``ON CONFLICT (...) DO UPDATE SET events = events + excluded.events, ...``), which
PostgreSQL and SQLite both run. Hand-written SQL, built once per process from the models'
own table and column names, because it runs on every settle (see "The ledger in SQL" in
``services``).
"""

from __future__ import annotations

import functools

from django.db import connection, transaction

from .models import SpendDay, SpendDimension, SpendRollup, UsageEvent, UsageStatus

# The rollup's unique key, in the order of its constraint, and what it sums.
DIMENSIONS = (
    "workspace_id", "hour", "user_id", "api_key_id", "capability", "model_id", "voice_id",
    "project", "source", "engine",
)  # fmt: skip
AMOUNTS = ("events", "units", "credits", "money", "shadow_credits")


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model, attname: str) -> str:
    """The quoted column of ``model``'s field whose attname is ``attname``."""
    field = next(f for f in model._meta.concrete_fields if f.attname == attname)
    return _q(field.column)


def hour_sql(vendor: str, created_at: str) -> str:
    """``created_at`` (a column expression) truncated to the start of its UTC hour.

    PostgreSQL: the timestamp read in UTC, truncated, read back as a UTC timestamptz.
    SQLite: Django stores a datetime as UTC text ``YYYY-MM-DD HH:MM:SS[.ffffff]``; its first
    13 characters are the hour, written as Django writes that hour (``… HH:00:00``), so the
    unique key compares equal to the hours the explorer queries with.
    """
    if vendor == "postgresql":
        return f"(DATE_TRUNC('hour', {created_at} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
    return f"(SUBSTR({created_at}, 1, 13) || ':00:00')"


def day_sql(vendor: str, created_at: str) -> str:
    """``created_at`` (a column expression) as its UTC date (``SpendDay.day``): on SQLite the
    first 10 characters of Django's UTC text, which is how Django stores a DateField."""
    if vendor == "postgresql":
        return f"(CAST({created_at} AT TIME ZONE 'UTC' AS DATE))"
    return f"SUBSTR({created_at}, 1, 10)"


# SpendDay's dimensions and the ledger column each one's value comes from (numeric ids as
# text, "" for none; the total's value is "").
DAY_DIMENSIONS = {
    SpendDimension.MEMBER: "user_id",
    SpendDimension.PROJECT: "project",
    SpendDimension.CAPABILITY: "capability",
    SpendDimension.MODEL: "model_id",
    SpendDimension.VOICE: "voice_id",
    SpendDimension.KEY: "api_key_id",
    SpendDimension.SOURCE: "source",
    SpendDimension.ENGINE: "engine",
    SpendDimension.TOTAL: None,
}


def _day_values(vendor: str, alias: str, *, grouped: bool) -> tuple[list[str], list[str], str]:
    """The SELECT expressions of SpendDay rows from ledger rows named ``alias`` crossed with
    the dimensions (``_DIMS``, named ``d``): (the key, the amounts, the FROM clause)."""
    whens = []
    for dimension, attname in DAY_DIMENSIONS.items():
        if attname is None:
            continue
        column = f"{alias}.{_column(UsageEvent, attname)}"
        if attname in ("user_id", "api_key_id"):
            column = f"COALESCE(CAST({column} AS TEXT), '')"
        whens.append(f"WHEN '{dimension.value}' THEN {column}")
    value = f"(CASE d.dimension {' '.join(whens)} ELSE '' END)"
    created_at = f"{alias}.{_column(UsageEvent, 'created_at')}"
    key = [
        f"{alias}.{_column(UsageEvent, 'workspace_id')}",
        day_sql(vendor, created_at),
        "d.dimension",
        value,
    ]
    _, amounts = _row_values(vendor, alias, grouped=grouped)
    dims = " UNION ALL ".join(
        f"SELECT '{d.value}'" + (" AS dimension" if i == 0 else "")
        for i, d in enumerate(DAY_DIMENSIONS)
    )
    return key, amounts, f"CROSS JOIN ({dims}) d"


def _row_values(vendor: str, alias: str, *, grouped: bool) -> tuple[list[str], list[str]]:
    """The SELECT expressions of a rollup row from ledger rows named ``alias``: (the
    dimensions, the amounts); ``grouped`` sums many rows, otherwise one row counts once."""
    e = {name: f"{alias}.{_column(UsageEvent, name)}" for name in (*DIMENSIONS, *AMOUNTS)
         if name not in ("hour", "events")}  # fmt: skip
    created_at = f"{alias}.{_column(UsageEvent, 'created_at')}"
    dims = [
        e["workspace_id"],
        hour_sql(vendor, created_at),
        f"COALESCE({e['user_id']}, 0)",
        f"COALESCE({e['api_key_id']}, 0)",
        *(e[name] for name in DIMENSIONS[4:]),
    ]
    amounts = [
        f"COALESCE({e['units']}, 0)",
        f"COALESCE({e['credits']}, 0)",
        e["money"],
        f"COALESCE({e['shadow_credits']}, 0)",
    ]
    if grouped:
        return dims, ["COUNT(*)", *(f"SUM({amount})" for amount in amounts)]
    return dims, ["1", *amounts]


DAY_KEY = ("workspace_id", "day", "dimension", "value")


def _upsert_tail(model=SpendRollup, key_names=DIMENSIONS) -> str:
    """``ON CONFLICT (the unique key) DO UPDATE SET`` each amount added to the row's."""
    table = _q(model._meta.db_table)
    key = ", ".join(_column(model, name) for name in key_names)
    sets = ", ".join(
        f"{_column(model, name)} = {table}.{_column(model, name)} + excluded.{_column(model, name)}"
        for name in AMOUNTS
    )
    return f" ON CONFLICT ({key}) DO UPDATE SET {sets}"


def _insert_head(model=SpendRollup, key_names=DIMENSIONS) -> str:
    table = _q(model._meta.db_table)
    columns = ", ".join(_column(model, name) for name in (*key_names, *AMOUNTS))
    return f"INSERT INTO {table} ({columns})"


@functools.cache
def settle_sql(update_sql: str, vendor: str) -> str:
    """PostgreSQL: ``update_sql`` (the conditional UPDATE of one ledger row, without
    RETURNING) and the upserts of what it settled into both rollups, as one statement: one
    round trip, atomic by itself, and nothing is added when the UPDATE changed no row. Its
    row count is the UPDATE's (0 or 1: the closing SELECT returns a row per settled row;
    PostgreSQL runs data-modifying CTEs to completion whether or not they are read)."""
    dims, amounts = _row_values(vendor, "settled", grouped=False)
    day_key, day_amounts, cross = _day_values(vendor, "settled", grouped=False)
    return (
        f"WITH settled AS ({update_sql} RETURNING *), "  # noqa: S608 (names from _meta; values are parameters)
        f"hourly AS ({_insert_head()} SELECT {', '.join(dims + amounts)} FROM settled"
        f"{_upsert_tail()}), "
        f"daily AS ({_insert_head(SpendDay, DAY_KEY)}"
        f" SELECT {', '.join(day_key + day_amounts)} FROM settled {cross}"
        f"{_upsert_tail(SpendDay, DAY_KEY)}) "
        "SELECT 1 FROM settled"
    )


@functools.cache
def row_upsert_sql(vendor: str) -> str:
    """Add one settled ledger row (``id = %s``) to its rollup row; run in the transaction
    of the UPDATE that settled it, and only when that UPDATE changed the row."""
    events = _q(UsageEvent._meta.db_table)
    dims, amounts = _row_values(vendor, "e", grouped=False)
    return (
        f"{_insert_head()} SELECT {', '.join(dims + amounts)} FROM {events} e"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE e.{_q(UsageEvent._meta.pk.column)} = %s AND e.{_column(UsageEvent, 'status')}"
        f" = '{UsageStatus.SETTLED.value}'"
        f"{_upsert_tail()}"
    )


@functools.cache
def day_upsert_sql(vendor: str) -> str:
    """Add one settled ledger row (``id = %s``) to its nine ``SpendDay`` rows; like
    ``row_upsert_sql``, in the transaction of the UPDATE that settled it."""
    events = _q(UsageEvent._meta.db_table)
    key, amounts, cross = _day_values(vendor, "e", grouped=False)
    return (
        f"{_insert_head(SpendDay, DAY_KEY)} SELECT {', '.join(key + amounts)}"  # noqa: S608 (names from _meta; values are parameters)
        f" FROM {events} e {cross}"
        f" WHERE e.{_q(UsageEvent._meta.pk.column)} = %s AND e.{_column(UsageEvent, 'status')}"
        f" = '{UsageStatus.SETTLED.value}'"
        f"{_upsert_tail(SpendDay, DAY_KEY)}"
    )


def row_add(pk) -> None:
    """Add the settled ledger row ``pk`` to both rollups (see ``row_upsert_sql`` and
    ``day_upsert_sql``); the caller's transaction holds the three statements together."""
    with connection.cursor() as cursor:
        cursor.execute(row_upsert_sql(connection.vendor), [pk])
        cursor.execute(day_upsert_sql(connection.vendor), [pk])


@functools.cache
def _rebuild_sql(vendor: str, one_workspace: bool) -> str:
    events = _q(UsageEvent._meta.db_table)
    dims, amounts = _row_values(vendor, "e", grouped=True)
    where = f"e.{_column(UsageEvent, 'status')} = '{UsageStatus.SETTLED.value}'"
    if one_workspace:
        where += f" AND e.{_column(UsageEvent, 'workspace_id')} = %s"
    # Group by the expressions themselves (SQLite and PostgreSQL both accept positions,
    # but the expressions say what they are).
    return (
        f"{_insert_head()} SELECT {', '.join(dims + amounts)} FROM {events} e"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE {where} GROUP BY {', '.join(dims)} ORDER BY 1, 2"
    )


@functools.cache
def _day_rebuild_sql(vendor: str, one_workspace: bool) -> str:
    events = _q(UsageEvent._meta.db_table)
    key, amounts, cross = _day_values(vendor, "e", grouped=True)
    where = f"e.{_column(UsageEvent, 'status')} = '{UsageStatus.SETTLED.value}'"
    if one_workspace:
        where += f" AND e.{_column(UsageEvent, 'workspace_id')} = %s"
    return (
        f"{_insert_head(SpendDay, DAY_KEY)} SELECT {', '.join(key + amounts)}"  # noqa: S608 (names from _meta; values are parameters)
        f" FROM {events} e {cross} WHERE {where} GROUP BY {', '.join(key)} ORDER BY 1, 3, 2"
    )


def rollup_rebuild(workspace=None) -> int:
    """Delete both rollups of ``workspace`` (or every workspace's) and sum the settled
    ledger into them again, in one transaction; the number of hourly rollup rows written
    (``SpendDay`` is written alongside: about nine rows per member-day).

    Safe while settles go on. On PostgreSQL both rollup tables are locked first (EXCLUSIVE:
    reads go on, writes wait; in the order a settle's statement takes them), so a settle is
    either committed before the lock (its ledger row is in the sums, its live rollup rows
    are deleted with the rest) or waits for the rebuild to commit and then adds itself (its
    ledger row was not committed when the sums were read). A settle's one statement needs
    those locks before it changes anything. On SQLite the DELETE takes the database's write
    lock, which does the same.

    Rows are written in the order the explorer reads them (the hourly rollup by hour, the
    daily one by dimension and day), as live settles write them anyway (in time order): a
    range of hours then sits in few table pages instead of one page per row, which is what
    a hash aggregate's order would give (on the bench's year, a filtered view read 38,000
    pages for 40,000 rows).
    """
    workspace_id = getattr(workspace, "pk", workspace)
    rollups, days = SpendRollup.objects.all(), SpendDay.objects.all()
    if workspace_id is not None:
        rollups = rollups.filter(workspace_id=workspace_id)
        days = days.filter(workspace_id=workspace_id)
    params = [workspace_id] if workspace_id is not None else []
    with transaction.atomic():
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                tables = ", ".join(_q(m._meta.db_table) for m in (SpendRollup, SpendDay))
                cursor.execute(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
        rollups.delete()
        days.delete()
        with connection.cursor() as cursor:
            cursor.execute(_rebuild_sql(connection.vendor, workspace_id is not None), params)
            written = cursor.rowcount
            cursor.execute(_day_rebuild_sql(connection.vendor, workspace_id is not None), params)
    return written
