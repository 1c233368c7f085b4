"""How fast a long project renders as drafts on the local engine, and how fast its editor serves.

1. A 20,000-word project (10 chapters of 30 blocks, about 67 words each: 300 blocks) is made
   through the project services and rendered as drafts by a real Celery worker on this
   machine's database and broker, the way a member's "Render drafts" button runs it (the render
   speaks ``CHORUS_PROJECT_RENDER_THREADS`` blocks at once: one per core by default, so both
   cores are busy). Prints blocks per minute, the audio made, the wall time and the real-time
   factor (wall time ÷ audio length).
2. The chapter editor of a 300-block chapter (every block with a chosen take) is requested
   over and over through Django's test client in this process: p50/p95 of its response time,
   and the number of database queries for a 30-block and a 300-block chapter (they must be
   equal: a constant number of queries).

Goals (issue 15, 2 cores): the whole project in under 10 minutes; the editor p95 <= 80 ms with
a constant number of queries.

PostgreSQL and Redis (the database is created when missing):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
    REDIS_URL=redis://127.0.0.1:6379/2 .venv/bin/python bench/projects.py

Without DATABASE_URL it runs on embedded SQLite (one block at a time) in a throwaway folder.
``--words`` makes a shorter project for a quick look. ``--editor-only`` skips the render: one
block is spoken by the local engine in this process and that clip is every take of the 30-
and 300-block chapters (the editor part alone, in seconds).
"""

import argparse
import html
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-projects-secret-key-0123456789-abcdefghij")
os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_QUEUE", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-bench-{os.getpid()}")
os.environ["CHORUS_VOICES_AUTO_SYNC"] = "1"

from benchdb import ensure_database  # noqa: E402 (this folder)

if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from apps.history.models import Generation  # noqa: E402
from apps.jobs.models import Job, JobStatus  # noqa: E402
from apps.projects import narration  # noqa: E402
from apps.projects.importers import ImportedChapter, ImportedScript  # noqa: E402
from apps.projects.models import Block, Project, RenderScope, Take  # noqa: E402
from apps.voices import services as voice_services  # noqa: E402
from apps.workspaces.models import Membership, User, Workspace  # noqa: E402
from apps.workspaces.services import workspace_create  # noqa: E402

TEXT = (
    "the harbour boats came in before dawn and nobody on the quay said a word while nets "
    "were hauled over the side gulls circled low above the water a bell rang twice from "
    "the hill where the old chapel stood we climbed until the town was small and the wind "
    "did the talking for us my grandmother kept a lamp in the window every night of winter "
    "so the fishermen would know the way home through fog and rain the market opened late "
    "that morning because the baker had gone down to see the catch children ran along the "
    "sea wall shouting names of ships they knew by heart"
)
WORDS = TEXT.split()


def paragraph(rng: random.Random, words: int) -> str:
    """``words`` words in sentences of 8 to 16 words (the last one as long as what is left),
    capitalised and punctuated."""
    sentences, count = [], 0
    while count < words:
        n = min(rng.randint(8, 16), words - count)
        chosen = [rng.choice(WORDS) for _ in range(n)]
        sentence = " ".join(chosen)
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        count += n
    return " ".join(sentences)


def script(words: int, chapters: int, seed: int = 15) -> ImportedScript:
    rng = random.Random(seed)
    per_chapter = [max(1, math.ceil(words / 67 / chapters))] * chapters  # 20,000: 10 x 30
    per_block = max(1, round(words / sum(per_chapter)))
    return ImportedScript(
        title="Harbour tales",
        author="Bench",
        language="en",
        chapters=tuple(
            ImportedChapter(
                title=f"Chapter {i + 1}", blocks=tuple(paragraph(rng, per_block) for _ in range(n))
            )
            for i, n in enumerate(per_chapter)
        ),
    )


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_worker():
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "studio_site", "worker", "--pool", "solo",
         "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )  # fmt: skip
    proc.log = log
    return proc


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def render_bench(workspace, user, membership, words: int, chapters: int) -> Project:
    made = script(words, chapters)
    project = narration.project_create(
        workspace=workspace, user=user, script=made, default_voice_id="local-joe"
    )
    total_words = sum(len(b.split()) for c in made.chapters for b in c.blocks)
    blocks = Block.objects.filter(chapter__project=project).count()
    print(f"project: {total_words:,} words in {blocks} blocks, {chapters} chapters")
    print(f"render threads: {narration.render_threads()} (cores: {os.cpu_count()})")
    worker = start_worker()
    try:
        time.sleep(3)  # the worker loads; the local engine loads with the first block
        started = time.perf_counter()
        render = narration.render_request(
            workspace=workspace,
            user=user,
            membership=membership,
            project=project,
            scope=RenderScope.PROJECT,
            draft=True,
        )
        last = ""
        while True:
            job = Job.objects.get(pk=render.job_id)
            if job.message != last:
                last = job.message
                print(f"  {time.perf_counter() - started:7.1f} s  {job.progress:3d} %  {last}")
            if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
                break
            if worker.poll() is not None:
                worker.log.seek(0)
                raise SystemExit(f"the worker exited:\n{worker.log.read().decode()[-2000:]}")
            time.sleep(1)
        wall = (job.finished_at - job.started_at).total_seconds()
    finally:
        stop(worker)
    if job.status != JobStatus.SUCCEEDED:
        raise SystemExit(f"the render {job.status}: {job.error}")
    takes = Take.objects.filter(render=render)
    audio = Generation.objects.filter(project_takes__render=render).aggregate(
        s=Sum("duration_seconds")
    )["s"]
    print(
        f"rendered {takes.count()} blocks in {wall:.1f} s: {takes.count() / wall * 60:.1f} "
        f"blocks/minute, {audio / 60:.1f} minutes of audio, real-time factor {wall / audio:.3f} "
        f"(goal: under 600 s for the project: {'met' if wall < 600 else 'missed'}, "
        f"{wall / 60:.1f} min)"
    )
    return project


def one_clip_project(workspace, user, membership) -> Project:
    """A 300-block project with one real clip: its first block rendered as a draft by the local
    engine in this process (the job a worker runs), that clip then the take of every block."""
    from apps.jobs.tasks import job_run

    project = narration.project_create(
        workspace=workspace, user=user, script=script(300 * 67, 1), default_voice_id="local-joe"
    )
    blocks = list(Block.objects.filter(chapter__project=project).order_by("position"))
    render = narration.render_request(
        workspace=workspace,
        user=user,
        membership=membership,
        project=project,
        scope=RenderScope.BLOCK,
        target=blocks[0],
        draft=True,
    )
    job = Job.objects.get(pk=render.job_id)
    job_run(job.pk, job.attempt)
    job.refresh_from_db()
    if job.status != JobStatus.SUCCEEDED:
        raise SystemExit(f"the one-block render {job.status}: {job.error}")
    clip = Take.objects.get(block=blocks[0])
    Take.objects.bulk_create(
        [
            Take(
                workspace=workspace,
                block=block,
                generation_id=clip.generation_id,
                draft=True,
                signature="bench",
                user=user,
            )
            for block in blocks[1:]
        ]
    )
    print(f"one local-engine clip ({clip.generation.duration_seconds:.1f} s) for 300 blocks")
    return project


def editor_bench(workspace, user, source: Project, requests: int) -> None:
    """A 300-block and a 30-block chapter whose blocks have the rendered project's takes."""
    takes = list(
        Take.objects.filter(block__chapter__project=source)
        .select_related("generation", "block")
        .order_by("block__chapter__position", "block__position", "id")
    )
    if len(takes) < 300:
        raise SystemExit(f"the editor part needs 300 takes; the render made {len(takes)}")
    sizes = {}
    for n in (30, 300):
        made = narration.project_create(
            workspace=workspace,
            user=user,
            script=ImportedScript(
                title=f"Editor {n}",
                author="",
                language="en",
                chapters=(
                    ImportedChapter(
                        title="One long chapter",
                        blocks=tuple(t.block.text for t in takes[:n]),
                    ),
                ),
            ),
            default_voice_id="local-joe",
        )
        chapter = made.chapters.get()
        for block, take in zip(chapter.blocks.order_by("position"), takes[:n], strict=False):
            copy = Take.objects.create(
                workspace=workspace,
                block=block,
                generation=take.generation,
                draft=True,
                signature=narration.block_signature(
                    block,
                    project=made,
                    chapter=chapter,
                    rules_print=narration.rules_fingerprint(()),
                    draft=True,
                ),
                user=user,
            )
            Block.objects.filter(pk=block.pk).update(chosen=copy)
        sizes[n] = reverse("projects:chapter", args=[made.public_id, chapter.public_id])
    client = Client()
    client.force_login(user)
    queries = {}
    for n, url in sizes.items():
        client.get(url)  # warm
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, response.status_code
        queries[n] = len(captured)
    times, floor = [], []
    url = sizes[300]
    # The floor, interleaved with the editor: the studio's Jobs page with no job, the least a
    # signed-in page costs here (session, workspace, sidebar, top bar, base template).
    floor_url = reverse("jobs:list")
    for _ in range(20):
        client.get(url)
        client.get(floor_url)
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        started = time.perf_counter()
        assert client.get(floor_url).status_code == 200
        floor.append((time.perf_counter() - started) * 1000)
    size_kb = len(response.content) / 1024
    p95 = pct(times, 95)
    print(
        f"editor, 300-block chapter ({size_kb:.0f} KiB): p50 {statistics.median(times):.1f} ms, "
        f"p95 {p95:.1f} ms, max {max(times):.1f} ms over {requests} requests "
        f"(goal p95 <= 80 ms: {'met' if p95 <= 80 else 'missed'})"
    )
    print(
        f"floor (the empty Jobs page, interleaved): p50 {statistics.median(floor):.1f} ms, "
        f"p95 {pct(floor, 95):.1f} ms; the editor adds p50 "
        f"{statistics.median(times) - statistics.median(floor):.1f} ms"
    )
    print(
        f"queries: {queries[30]} for 30 blocks, {queries[300]} for 300 blocks "
        f"({'constant' if queries[30] == queries[300] else 'NOT constant'})"
    )
    # What the page loads after it (htmx, hx-trigger="load"): the chapter's render panel, whose
    # estimates read the chapter again. Timed apart: it is its own request.
    found = re.search(r'hx-get="([^"]+)" hx-trigger="load"', response.content.decode())
    if found:
        panel = html.unescape(found.group(1))
        panel_times = []
        for _ in range(max(20, requests // 4)):
            started = time.perf_counter()
            answer = client.get(panel, headers={"HX-Request": "true"})
            panel_times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.status_code
        print(
            f"its render panel (loaded after the page): p50 {statistics.median(panel_times):.1f}"
            f" ms, p95 {pct(panel_times, 95):.1f} ms"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=20_000)
    parser.add_argument("--chapters", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--editor-only",
        action="store_true",
        help="skip the render: one local-engine clip is every take of the editor's chapters",
    )
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}")
    user = User.objects.create_user(email=f"bench-{os.getpid()}@example.com", password="x" * 12)
    workspace = workspace_create(name=f"Bench projects {os.getpid()}", owner=user)
    try:
        voice_services.library_sync(workspace=workspace)
        membership = Membership.objects.get(workspace=workspace, user=user)
        if args.editor_only:
            project = one_clip_project(workspace, user, membership)
        else:
            project = render_bench(workspace, user, membership, args.words, args.chapters)
        editor_bench(workspace, user, project, args.requests)
    finally:
        Workspace.objects.filter(pk=workspace.pk).delete()
        user.delete()


if __name__ == "__main__":
    main()
