"""Library page server time and queries with 10,000 voices, 50 tags and 20 collections.

Fills a throwaway workspace (random labels and a preview each, 0–3 tags per voice, 20
collections of 400 voices, 300 favourites of the signed-in member), then requests
``/voices/`` through Django's full stack (middleware, session, template) in-process with a set
of filter combinations, plain and htmx. Prints per combination the p50/p95 server time and
the number of queries, and checks the targets: p95 <= 50 ms and <= 12 queries whatever the
filters.

PostgreSQL (the database is created when missing):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
        .venv/bin/python bench/voices_library.py

Without DATABASE_URL it runs on embedded SQLite in a throwaway CHORUS_VAR_DIR.
"""

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(40))
os.environ["ALLOWED_HOSTS"] = "testserver"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")

from benchdb import ensure_database  # noqa: E402 (this folder)

if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from apps.voices.models import Collection, Favourite, LibraryVoice, Tag  # noqa: E402
from apps.voices.services import LibraryFilters, facets_refresh, library_voices  # noqa: E402
from apps.workspaces.models import User, Workspace  # noqa: E402
from apps.workspaces.services import workspace_create  # noqa: E402

GENDERS = ["female", "male", "neutral"]
AGES = ["young", "middle_aged", "old"]
ACCENTS = ["american", "british", "australian", "irish", "indian", "nigerian", "scottish"]
LANGUAGES = ["en", "fr", "de", "es", "it", "pt", "ja", "hi"]
USE_CASES = ["narration", "conversational", "characters", "news", "social_media"]
DESCRIPTIVE = ["warm", "crisp", "deep", "calm", "raspy", "upbeat", "soft"]
CATEGORIES = ["premade", "cloned", "generated", "professional"]


def fill(workspace, user, voices: int, tags: int, collections: int, rng: random.Random):
    rows = []
    for i in range(voices):
        labels = {
            "gender": rng.choice(GENDERS),
            "age": rng.choice(AGES),
            "accent": rng.choice(ACCENTS),
            "language": rng.choice(LANGUAGES),
            "use_case": rng.choice(USE_CASES),
            "descriptive": rng.choice(DESCRIPTIVE),
        }
        rows.append(
            LibraryVoice(
                workspace=workspace,
                engine=rng.choice(["elevenlabs", "local"]),
                voice_id=f"bench-{i:05d}-{secrets.token_hex(4)}",
                name=f"{rng.choice(DESCRIPTIVE).title()} {rng.choice(ACCENTS).title()} {i}",
                category=rng.choice(CATEGORIES),
                labels=labels,
                description=f"A {labels['descriptive']} {labels['accent']} voice for "
                f"{labels['use_case'].replace('_', ' ')}.",
                use_count=rng.randint(0, 500),
                preview_url=f"https://previews.example.com/{i:05d}.mp3",  # as engines give
                **labels,
            )
        )
    LibraryVoice.objects.bulk_create(rows, batch_size=1000)
    ids = list(LibraryVoice.objects.filter(workspace=workspace).values_list("pk", flat=True))
    tag_rows = Tag.objects.bulk_create(
        [Tag(workspace=workspace, name=f"tag-{n:02d}") for n in range(tags)]
    )
    tag_rows = list(Tag.objects.filter(workspace=workspace))
    through = LibraryVoice.tags.through
    links = []
    for pk in ids:
        for tag in rng.sample(tag_rows, rng.randint(0, 3)):
            links.append(through(libraryvoice_id=pk, tag_id=tag.pk))
    through.objects.bulk_create(links, batch_size=5000)
    Collection.objects.bulk_create(
        [Collection(workspace=workspace, name=f"Collection {n:02d}") for n in range(collections)]
    )
    members = LibraryVoice.collections.through
    links = []
    for collection in Collection.objects.filter(workspace=workspace):
        for pk in rng.sample(ids, min(400, len(ids))):
            links.append(members(libraryvoice_id=pk, collection_id=collection.pk))
    members.objects.bulk_create(links, batch_size=5000)
    Favourite.objects.bulk_create(
        [Favourite(user=user, voice_id=pk) for pk in rng.sample(ids, min(300, len(ids)))]
    )
    facets_refresh(workspace)  # as a sync does after writing its voices
    return tag_rows


def combinations(tags, workspace):
    collection = Collection.objects.filter(workspace=workspace).first()
    return [
        ("everything, by name", {}),
        ("page 200", {"page": "200"}),
        ("text search", {"q": "warm"}),
        ("gender + accent", {"gender": "female", "accent": "british"}),
        ("all six labels", {"gender": "male", "age": "old", "accent": "irish",
                            "language": "en", "use_case": "news", "descriptive": "deep"}),
        ("category + engine", {"category": "cloned", "engine": "local"}),
        ("tag", {"tag": str(tags[7].pk)}),
        ("collection", {"collection": str(collection.pk)}),
        ("favourites, most used", {"favourites": "1", "sort": "most_used"}),
        ("tag + collection + search, newest", {"tag": str(tags[3].pk),
                                               "collection": str(collection.pk),
                                               "q": "voice", "sort": "newest"}),
        ("recently used, withdrawn too", {"sort": "recent", "withdrawn": "1"}),
        ("no match", {"q": "zzz-nothing"}),
    ]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--collections", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="per combination (40)")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    if connection.vendor == "postgresql":
        # Earlier runs deleted their voices; where autovacuum is off (a test server) the dead
        # rows would stay and slow every later run. This run's own rows are measured fresh
        # (analysed, never vacuumed), as after a sync.
        tables = [model._meta.db_table for model in (LibraryVoice, Tag, Collection, Favourite)]
        tables += [LibraryVoice.tags.through._meta.db_table]
        tables += [LibraryVoice.collections.through._meta.db_table]
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {', '.join(tables)}")
    rng = random.Random(7)
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    user = User.objects.create_user(email=f"bench-voices-{tag}@example.com", password="x" * 16)
    workspace = workspace_create(name=f"Voices bench {tag}", owner=user)
    try:
        started = time.perf_counter()
        tags = fill(workspace, user, args.voices, args.tags, args.collections, rng)
        print(f"filled {args.voices} voices, {args.tags} tags, {args.collections} collections "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        client = Client()
        client.force_login(user)
        client.get("/voices/")  # warm-up: templates, URL resolver, connection
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        print(f"\nlibrary page, database: {db}, {args.requests} requests per row")
        print(
            f"{'filters':<36} {'htmx':>4} {'voices':>6} {'p50 ms':>7} {'p95 ms':>7} {'queries':>7}"
        )
        worst_p95, worst_queries = 0.0, 0
        for label, query in combinations(tags, workspace):
            for htmx in (False, True):
                headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
                times, queries = [], set()
                for _ in range(args.requests):
                    # The log keeps 9,000 queries: past that, a capture would count wrong.
                    connection.queries_log.clear()
                    with CaptureQueriesContext(connection) as captured:
                        t0 = time.perf_counter()
                        response = client.get("/voices/", query, **headers)
                        times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, (label, response.status_code)
                    queries.add(len(captured))
                count = library_voices(
                    workspace=workspace, user=user, filters=LibraryFilters.from_query(query)
                ).count()
                p50 = statistics.median(times)
                p95 = statistics.quantiles(times, n=20)[18]
                worst_p95 = max(worst_p95, p95)
                worst_queries = max(worst_queries, *queries)
                shown = "/".join(str(q) for q in sorted(queries))
                print(f"{label:<36} {'yes' if htmx else 'no':>4} {count:>6} {p50:7.2f} "
                      f"{p95:7.2f} {shown:>7}")  # fmt: skip
        print("\ntargets:")
        print(f"  page server time p95 <= 50 ms (worst row)   {worst_p95:8.2f}  "
              f"{'MET' if worst_p95 <= 50 else 'MISSED'}")  # fmt: skip
        print(f"  queries <= 12 whatever the filters          {worst_queries:8d}  "
              f"{'MET' if worst_queries <= 12 else 'MISSED'}")  # fmt: skip
    finally:
        Workspace.objects.filter(pk=workspace.pk).delete()
        user.delete()


if __name__ == "__main__":
    main()
