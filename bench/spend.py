"""How fast the spend explorer serves a team's year: 1,000,000 ledger rows, 50 members, PostgreSQL.

1. A workspace of 50 members (a few managers, some with personal keys) gets a year of ledger
   rows written with COPY (``--rows``, default 1,000,000): mostly settled, some refunded or
   failed; each member has a few favourite voices, models and projects, works mostly on
   weekdays in office hours, and calls from the studio, jobs or their keys. Local drafts cost
   0 credits and carry their shadow cost. The rows stay for the next run (``--fresh`` writes
   them again).
2. The hourly rollup is rebuilt from the ledger (``billing.rollup.rollup_rebuild``): its time
   and size.
3. Every explorer view is requested through Django's test client as a manager, ``--requests``
   times each, interleaved with a floor (the empty Jobs page: session, workspace, sidebar, base
   template): the spend page grouped by each dimension per day (30 days), week (12 weeks) and
   month (a year), filtered views, a member's own view, the drill-down of a cell and of a whole
   month (first and a deep page), the CSV of a month's table and of a month's raw rows. p50/p95
   per view, and the number of queries of each for a week and for a year (constant: equal).

Goal (issue 16): every view and the CSV of a month at p95 <= 200 ms, constant queries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
    REDIS_URL=redis://127.0.0.1:6379/2 .venv/bin/python bench/spend.py
"""

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-spend-secret-key-0123456789-abcdefghijklmn")
os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-bench-{os.getpid()}")

if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    raise SystemExit("bench/spend.py needs PostgreSQL: set DATABASE_URL=postgres://…")

from benchdb import ensure_database  # noqa: E402 (this folder)

ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.billing.models import SpendDay, SpendRollup, UsageEvent  # noqa: E402
from apps.gateway.models import ApiKey  # noqa: E402
from apps.workspaces.models import Membership, Role, User, Workspace  # noqa: E402
from studio_site.timezones import COOKIE as TZ_COOKIE  # noqa: E402

SLUG = "bench-spend"
MEMBERS = 50
GOAL_MS = 200.0
PRICE = Decimal("0.00022")  # per credit (Creator plan)
VOICES = [f"voice_{n:02d}" for n in range(40)] + [f"local-{n}" for n in ("joe", "amy", "lessac")]
MODELS = {
    "tts": [("eleven_multilingual_v2", 1), ("eleven_flash_v2_5", 1), ("eleven_v3", 2)],
    "stt": [("scribe_v1", 22)],
    "sound_effect": [("", 40)],
    "music": [("music_v1", 300)],
    "dubbing": [("", 900)],
    "voice_design": [("eleven_ttv_v3", 150)],
}
CAPABILITY_WEIGHTS = [("tts", 80), ("stt", 8), ("sound_effect", 4), ("music", 3), ("dubbing", 2)]
CAPABILITY_WEIGHTS.append(("voice_design", 3))
UNITS = {"tts": "character", "stt": "minute"}
PROJECTS = [f"prj_{n:04d}" for n in range(30)]


def pct(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- The team and its year ----------------------------------------------------------------


def team() -> tuple[Workspace, list[User]]:
    """The bench workspace and its 50 members (the first is the owner, 4 managers), made once."""
    workspace = Workspace.objects.filter(slug=SLUG).first()
    if workspace is None:
        workspace = Workspace.objects.create(name="Bench spend", slug=SLUG)
    users = list(
        User.objects.filter(email__startswith="spend-bench-", email__endswith="@example.com")
    )
    if len(users) < MEMBERS:
        User.objects.bulk_create(
            [
                User(
                    email=f"spend-bench-{n:02d}@example.com",
                    name=f"Member {n:02d}",
                    password="!",  # noqa: S106 (unusable: the bench signs in with force_login)
                )
                for n in range(MEMBERS)
            ],
            ignore_conflicts=True,
        )
        users = list(User.objects.filter(email__startswith="spend-bench-"))
    users.sort(key=lambda u: u.email)
    roles = [Role.OWNER] + [Role.MANAGER] * 4 + [Role.MEMBER] * (MEMBERS - 5)
    Membership.objects.bulk_create(
        [
            Membership(workspace=workspace, user=u, role=r)
            for u, r in zip(users, roles, strict=True)
        ],
        ignore_conflicts=True,
    )
    if not ApiKey.objects.filter(workspace=workspace).exists():
        ApiKey.objects.bulk_create(
            [
                ApiKey(
                    workspace=workspace,
                    user=u,
                    name=f"script {k}",
                    prefix=f"chorus_{n:02d}{k}",
                    key_hash=uuid.uuid4().hex + uuid.uuid4().hex,
                )
                for n, u in enumerate(users)
                if n % 3 == 0
                for k in range(1 + n % 2)
            ]
        )
    return workspace, users


def _habits(rng: random.Random, users, keys_by_user):
    """Each member's favourites: 2-3 voices, 1-2 TTS models, 1-3 projects, how busy they are,
    how they call (studio, jobs, their keys)."""
    habits = []
    for user in users:
        keys = keys_by_user.get(user.pk, [])
        habits.append(
            {
                "user": user.pk,
                "voices": rng.sample(VOICES, rng.randint(2, 3)),
                "tts_models": rng.sample(MODELS["tts"], rng.randint(1, 2)),
                "projects": rng.sample(PROJECTS, rng.randint(1, 3)),
                "weight": rng.paretovariate(1.5),
                "keys": keys,
                "sources": ["ui", "job"] + (["api", "api"] if keys else []),
                "local_share": rng.uniform(0.2, 0.7),
            }
        )
    return habits


def ledger_write(workspace, users, rows: int, seed: int = 16) -> float:
    """``rows`` ledger rows over the year to now, written with COPY; seconds taken."""
    rng = random.Random(seed)
    keys_by_user: dict[int, list[int]] = {}
    for key in ApiKey.objects.filter(workspace=workspace):
        keys_by_user.setdefault(key.user_id, []).append(key.pk)
    habits = _habits(rng, users, keys_by_user)
    weights = [h["weight"] for h in habits]
    capabilities = [c for c, _ in CAPABILITY_WEIGHTS]
    capability_weights = [w for _, w in CAPABILITY_WEIGHTS]
    now = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    year_start = now - timedelta(days=365)
    # Days weighted: weekdays 5×, weekends 1×; hours: office hours mostly.
    days = [year_start + timedelta(days=n) for n in range(366)]
    day_weights = [5 if d.weekday() < 5 else 1 for d in days]
    hour_weights = [1] * 7 + [6] * 12 + [2] * 5

    fields = [
        f for f in UsageEvent._meta.concrete_fields if f.column != "id"
    ]  # every column but the id
    columns = [f.column for f in fields]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        table = UsageEvent._meta.db_table
        with cursor.cursor.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
            chosen_habits = rng.choices(habits, weights=weights, k=rows)
            chosen_days = rng.choices(days, weights=day_weights, k=rows)
            chosen_hours = rng.choices(range(24), weights=hour_weights, k=rows)
            chosen_caps = rng.choices(capabilities, weights=capability_weights, k=rows)
            moments = []
            for n in range(rows):
                at = chosen_days[n] + timedelta(hours=chosen_hours[n], seconds=rng.randrange(3600))
                if at >= now:
                    at = now - timedelta(seconds=rng.randrange(1, 86400 * 7))
                moments.append(at)
            # In time order, as a ledger is written: a month's rows lie together on disk.
            moments.sort()
            for n in range(rows):
                h = chosen_habits[n]
                capability = chosen_caps[n]
                at = moments[n]
                if capability == "tts":
                    model, rate = rng.choice(h["tts_models"])
                    units = Decimal(rng.randint(40, 2400))
                    voice = rng.choice(h["voices"])
                else:
                    model, rate = MODELS[capability][0]
                    units = Decimal(rng.randint(1, 90)) if capability == "stt" else Decimal(1)
                    voice = rng.choice(h["voices"]) if capability == "dubbing" else ""
                local = capability == "tts" and rng.random() < h["local_share"]
                if local:
                    model, voice = "piper", rng.choice(VOICES[-3:])
                engine = "local" if local else "elevenlabs"
                cost = (units * rate).quantize(Decimal("0.001"))
                roll = rng.random()
                status = "settled" if roll < 0.93 else ("refunded" if roll < 0.97 else "failed")
                credits = Decimal(0) if local or status != "settled" else cost
                source = rng.choice(h["sources"])
                key = rng.choice(h["keys"]) if source == "api" else None
                project = rng.choice(h["projects"]) if source == "job" or rng.random() < 0.3 else ""
                values = {
                    "workspace_id": workspace.pk,
                    "user_id": h["user"],
                    "api_key_id": key,
                    "source": source,
                    "capability": capability,
                    "engine": engine,
                    "model_id": model,
                    "voice_id": voice,
                    "unit": UNITS.get(capability, "generation"),
                    "estimated_units": units,
                    "units": units if status == "settled" else None,
                    "estimated_credits": Decimal(0) if local else cost,
                    "credits": credits if status != "failed" else Decimal(0),
                    "upstream_credits": None,
                    "money": (credits * PRICE).quantize(Decimal("0.000001")),
                    "upstream_request_id": "" if local else f"{rng.getrandbits(128):032x}",
                    "request_id": f"{rng.getrandbits(128):032x}",
                    "idempotency_key": f"bench-spend-{n}-{seed}",
                    "status": status,
                    "flagged": False,
                    "units_so_far": None,
                    "progress_at": None,
                    "note": "" if status == "settled" else "the call failed upstream",
                    "purpose_type": "block" if project else "",
                    "purpose_id": str(rng.randrange(1, 10**6)) if project else "",
                    "project": project,
                    "shadow_credits": cost if local else None,
                    "created_at": at,
                    "finished_at": at + timedelta(seconds=2),
                }
                copy.write_row([values[f.attname] for f in fields])
                if n and n % 200_000 == 0:
                    print(f"  {n:,} rows…", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{UsageEvent._meta.db_table}"')
    return time.perf_counter() - started


# --- Timing the views -----------------------------------------------------------------------


def _views(users, month_start, month_end, week_start, today, deep) -> list[tuple[str, str, dict]]:
    """(label, URL name, query) of every explorer view to time."""
    year = {"from": (today - timedelta(days=364)).isoformat(), "to": today.isoformat()}
    quarter = {"from": (today - timedelta(days=91)).isoformat(), "to": today.isoformat()}
    month = {"from": month_start.isoformat(), "to": month_end.isoformat()}
    views = []
    for by in ("member", "project", "capability", "model", "voice", "key", "source", "engine"):
        views.append((f"spend by {by}, per day (30 days)", "billing:spend", {"by": by}))
        views.append(
            (f"spend by {by}, per week (12 weeks)", "billing:spend", {"by": by, "period": "week"})
        )
        views.append(
            (
                f"spend by {by}, per month (a year)",
                "billing:spend",
                {"by": by, "period": "month", **year},
            )
        )
    heavy = str(users[7].pk)
    views += [
        ("spend, one total per day", "billing:spend", {"by": "none"}),
        ("spend in money by voice", "billing:spend", {"by": "voice", "measure": "money"}),
        (
            "spend of one member by voice, a year",
            "billing:spend",
            {"by": "voice", "member": heavy, "period": "month", **year},
        ),
        (
            "final TTS by model, per week",
            "billing:spend",
            {"by": "model", "capability": "tts", "engine": "elevenlabs", "period": "week"},
        ),
        (
            "drill-down: one member's day",
            "billing:spend_rows",
            {"by": "member", "member": heavy, "bucket": week_start.isoformat(), **month},
        ),
        ("drill-down: a month, first page", "billing:spend_rows", month),
        ("drill-down: a month, mid-month page", "billing:spend_rows", {**month, "after": deep}),
        ("CSV of a month's table (by member per day)", "billing:spend_csv", month),
        (
            "CSV of a month's rows of one member",
            "billing:spend_rows_csv",
            {**month, "member": heavy},
        ),
        ("CSV of a month's rows (whole team)", "billing:spend_rows_csv", month),
    ]
    # In another zone than UTC the unfiltered views also move some hours between buckets
    # (spend.DailyPlan): Berlin one or two a day, New York four or five; 92 days by day (the
    # longest a per-day view covers) is the most hours there are to move.
    for zone in ("Europe/Berlin", "America/New_York"):
        views += [
            (f"[{zone}] spend by member, per day (30 days)", "billing:spend", {"by": "member"}),
            (
                f"[{zone}] spend by voice, per week (12 weeks)",
                "billing:spend",
                {"by": "voice", "period": "week"},
            ),
            (
                f"[{zone}] spend by member, per month (a year)",
                "billing:spend",
                {"by": "member", "period": "month", **year},
            ),
            (
                f"[{zone}] spend by member, per day (92 days, the most per day)",
                "billing:spend",
                {"by": "member", **quarter},
            ),
            (f"[{zone}] CSV of a month's table", "billing:spend_csv", month),
        ]
    views.append(
        (
            "spend by member, per day (92 days, UTC)",
            "billing:spend",
            {"by": "member", **quarter},
        )
    )
    return views


def _get(client, url, query):
    """One request, its body read to the end (a streamed CSV included)."""
    response = client.get(url, query)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def time_views(manager, member, users, requests: int, only: str = "") -> list[dict]:
    today = timezone.now().date()
    month_end = today.replace(day=1) - timedelta(days=1)
    month_start = month_end.replace(day=1)
    week_start = month_start + timedelta(days=10)
    client = Client()
    client.force_login(manager)
    floor_url = reverse("jobs:list")
    results = []
    # A deep page: the cursor of the month's 40,000th settled row (what "Later" links hold).
    from apps.billing.spend import _cursor

    month_rows = UsageEvent.objects.filter(
        workspace__slug=SLUG,
        status="settled",
        created_at__gte=datetime.combine(month_start, datetime.min.time(), tzinfo=UTC),
    ).order_by("created_at", "id")
    deep = _cursor(month_rows[40_000])
    views = _views(users, month_start, month_end, week_start, today, deep)
    for label, name, query in views:
        if only and only.lower() not in label.lower():
            continue
        try:
            url = reverse(name)
        except NoReverseMatch:
            print(f"{label}: {name} is not routed yet, skipped")
            continue
        zone = label[1:].split("]")[0] if label.startswith("[") else "UTC"
        client.cookies[TZ_COOKIE] = zone  # the viewer's zone (the browser's, as a cookie)
        _get(client, url, query)  # the session's first read is not the view's
        # Queries for a week and for a year of the same view: a constant number means equal.
        counts = []
        drawn = name in ("billing:spend", "billing:spend_csv")
        per_day = drawn and query.get("period", "day") == "day"
        for span in (7, 92 if per_day else 364):  # (per day: a quarter at most)
            wide = {**query}
            if "bucket" not in wide:
                wide.update(
                    {
                        "from": (today - timedelta(days=span - 1)).isoformat(),
                        "to": today.isoformat(),
                    }
                )
                wide.pop("page", None)
            with CaptureQueriesContext(connection) as captured:
                response, body = _get(client, url, wide)
            assert response.status_code == 200, (label, response.status_code, body[:300])
            counts.append(len(captured))
        for _ in range(3):  # warm
            _get(client, url, query)
            client.get(floor_url)
        times, floor = [], []
        for _ in range(requests):
            started = time.perf_counter()
            response, body = _get(client, url, query)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (label, response.status_code)
            started = time.perf_counter()
            assert client.get(floor_url).status_code == 200
            floor.append((time.perf_counter() - started) * 1000)
        result = {
            "label": label,
            "p50": statistics.median(times),
            "p95": pct(times, 95),
            "floor50": statistics.median(floor),
            "floor95": pct(floor, 95),
            "queries": counts,
            "kib": len(body) / 1024,
        }
        results.append(result)
        print(
            f"{label:48s} p50 {result['p50']:6.1f} ms  p95 {result['p95']:6.1f} ms  "
            f"(floor p50 {result['floor50']:4.1f} / p95 {result['floor95']:4.1f})  "
            f"queries {counts[0]}/{counts[1]}{'' if counts[0] == counts[1] else ' NOT constant'}"
            f"  {result['kib']:.0f} KiB",
            flush=True,
        )
    if not only or only.lower() in "csv of a month's rows (whole team) floor":
        results.append(copy_floor(client_for(manager), month_start, month_end, requests))
    # A member's own view: the same page, held to their rows.
    client = Client()
    client.force_login(member)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response, _ = _get(client, reverse("billing:spend"), {"by": "capability"})
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    own = {"label": "a member's own spend by capability", "queries": [0, 0]}
    own.update(p50=statistics.median(times), p95=pct(times, 95))
    results.append(own)
    print(f"{own['label']:48s} p50 {own['p50']:6.1f} ms  p95 {own['p95']:6.1f} ms")
    return results


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    client.cookies[TZ_COOKIE] = "UTC"
    return client


def copy_floor(client, month_start, month_end, requests: int) -> dict:
    """The whole team's raw CSV of a month against what PostgreSQL itself takes to write the
    same rows (``COPY (the same SELECT, plain columns) TO STDOUT``, read to the end by
    psycopg), interleaved: the part of the view that no Python can remove."""
    from apps.billing.ledger_csv import LEDGER_COLUMNS

    rows = UsageEvent.objects.filter(
        workspace__slug=SLUG,
        status="settled",
        created_at__gte=datetime.combine(month_start, datetime.min.time(), tzinfo=UTC),
        created_at__lt=datetime.combine(
            month_end + timedelta(days=1), datetime.min.time(), tzinfo=UTC
        ),
    ).order_by("created_at", "id")
    sql, params = rows.values_list(*[f for _, f, _ in LEDGER_COLUMNS]).query.sql_with_params()
    query = {"from": month_start.isoformat(), "to": month_end.isoformat()}
    url = reverse("billing:spend_rows_csv")

    def bare() -> int:
        size = 0
        statement = f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)"
        with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
            for data in copy:
                size += len(data)
        return size

    views, floor = [], []
    for n in range(requests + 3):
        started = time.perf_counter()
        _, body = _get(client, url, query)
        view_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        size = bare()
        floor_ms = (time.perf_counter() - started) * 1000
        if n >= 3:  # the first three warm up
            views.append(view_ms)
            floor.append(floor_ms)
    result = {
        "label": "CSV of a month's rows (whole team) vs bare COPY",
        "p50": statistics.median(views),
        "p95": pct(views, 95),
        "queries": [0, 0],
    }
    print(
        f"{result['label']:48s} p50 {result['p50']:6.1f} ms  p95 {result['p95']:6.1f} ms  "
        f"(PostgreSQL's bare COPY of the same rows: p50 {statistics.median(floor):.1f} / "
        f"p95 {pct(floor, 95):.1f} ms, {size / 1024:.0f} KiB; "
        f"the view's {len(body) / 1024:.0f} KiB)",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--fresh", action="store_true", help="write the ledger again")
    parser.add_argument("--no-rebuild", action="store_true", help="keep the rollup as it is")
    parser.add_argument("--only", default="", help="time only the views whose label has this")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor} {connection.pg_version}")
    workspace, users = team()
    have = UsageEvent.objects.filter(workspace=workspace).count()
    if args.fresh or have != args.rows:
        UsageEvent.objects.filter(workspace=workspace).delete()
        print(f"writing {args.rows:,} ledger rows for {len(users)} members over a year…")
        seconds = ledger_write(workspace, users, args.rows)
        print(f"ledger: {args.rows:,} rows in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")
    else:
        print(f"ledger: {have:,} rows already there (--fresh writes them again)")
    built = (
        SpendRollup.objects.filter(workspace=workspace).exists()
        and SpendDay.objects.filter(workspace=workspace).exists()
    )
    if not args.no_rebuild or not built:
        from apps.billing.rollup import rollup_rebuild

        started = time.perf_counter()
        written = rollup_rebuild(workspace)
        with connection.cursor() as cursor:
            for model in (SpendRollup, SpendDay):
                cursor.execute(f'ANALYZE "{model._meta.db_table}"')
        print(
            f"rollup_rebuild: {written:,} hourly and "
            f"{SpendDay.objects.filter(workspace=workspace).count():,} daily rollup rows from "
            f"the ledger in {time.perf_counter() - started:.1f} s (both tables)"
        )
    else:
        print(
            f"rollups kept: {SpendRollup.objects.filter(workspace=workspace).count():,} hourly, "
            f"{SpendDay.objects.filter(workspace=workspace).count():,} daily rows"
        )
    manager = users[1]  # a manager, not the owner
    member = users[20]
    results = time_views(manager, member, users, args.requests, args.only)
    worst = max(results, key=lambda r: r["p95"])
    missed = [r["label"] for r in results if r["p95"] > GOAL_MS]
    print(
        f"\nworst p95: {worst['p95']:.1f} ms ({worst['label']}); goal p95 <= {GOAL_MS:.0f} ms: "
        f"{'met by every view' if not missed else 'missed by ' + ', '.join(missed)}"
    )
    changing = [r["label"] for r in results if r["queries"][0] != r["queries"][1]]
    print(
        "queries: constant in every view (a week and a year)"
        if not changing
        else f"queries NOT constant in: {', '.join(changing)}"
    )


if __name__ == "__main__":
    main()
