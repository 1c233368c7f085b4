"""What the /v1 gateway adds to a streaming text-to-speech request, and what it costs in CPU.

Starts the fake ElevenLabs upstream (``../shared/tools/fake_elevenlabs_upstream.py``: 75 ms to
the first byte, then 8 x 4 KiB chunks 20 ms apart) and a real Daphne server (DEBUG off) on free
loopback ports, points a bench workspace at that upstream through the elevenlabs engine, gives
its member a personal API key and a budget, and lets ``../shared/tools/overhead_bench.py`` send
the same streaming requests to ``/v1/text-to-speech/{voice_id}/stream`` on Chorus (with the key)
and straight to the upstream, interleaved in one run, at concurrency 1, 8 and 32 with steady
arrivals (each round's first requests spread over about one request's duration). Chorus runs
as in production: ``python -m studio_site.server --processes N`` (``--processes``, default
``auto``: one Daphne process per CPU, as docker/compose.yml runs it), N processes sharing one
port. Prints, per concurrency and beside the floor's figure (below), the added time to first
byte (p50/p95/p99, paired median), the CPU per proxied request (key lookup and metering
included; all of Chorus's processes) and the usage-ledger events settled per second (settled
events / wall time of the Chorus rounds; beside it the floor's requests per second, the most
the same rounds can carry), then each target as met or missed.

Targets (issue 13; 2 cores, PostgreSQL + Redis):
- C=1: added TTFB p50 <= floor + 4 ms;
- C=8: added TTFB p50 <= floor + 6 ms, p99 <= 30 ms;
- C=32, no collapse: added TTFB p50 <= 40 ms, p99 <= 120 ms, no errors, >= 120 settled
  ledger events/s;
- CPU: Chorus <= floor + 6 ms per proxied request (at every concurrency).

The floor (``passthrough_floor.py`` under Daphne: the same stream passed through with httpx
and nothing else) is interleaved with the other two unless --no-floor: it shows how much of
the figures is the stack itself rather than Chorus. At C >= 32 a round is 400 requests per
target (12.5 per worker), so the 250 ms ramp at its start is a small share of its wall time
and settled/s measures the ledger rather than the ramp.

PostgreSQL (the database is created when missing):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
    REDIS_URL=redis://127.0.0.1:6379/2 .venv/bin/python bench/gateway_overhead.py

Without DATABASE_URL it runs on embedded SQLite in a throwaway CHORUS_VAR_DIR.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = (ROOT / ".." / "shared" / "tools").resolve()
sys.path.insert(0, str(ROOT))

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
# The server and this script must share SECRET_KEY: the upstream key is encrypted with it.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(40))
os.environ["ALLOWED_HOSTS"] = "127.0.0.1"
os.environ["LOG_LEVEL"] = "WARNING"
# A cap above the highest concurrency: the per-member slot counting is measured, not refused.
os.environ.setdefault("CHORUS_API_MAX_CONCURRENT", "1000")
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
# Chorus's engine points at the fake upstream on 127.0.0.1: loopback must be allowed.
os.environ["CHORUS_ENGINE_ALLOW_LOOPBACK"] = "1"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_QUEUE", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-bench-{os.getpid()}")

UPSTREAM_KEY = "fake-upstream-key-" + secrets.token_hex(8)
VOICE_ID = "21m00Tcm4TlvDq8ikWAM"
STREAM_PATH = f"/v1/text-to-speech/{VOICE_ID}/stream"
EXPECT_BYTES = 8 * 4096


from benchdb import ensure_database  # noqa: E402 (this folder)

if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    ensure_database(os.environ["DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.billing.models import Budget, UsageEvent, UsageStatus  # noqa: E402
from apps.gateway.services import api_key_create  # noqa: E402
from apps.workspaces.models import User, Workspace  # noqa: E402
from apps.workspaces.services import engine_settings_update, workspace_create  # noqa: E402
from studio_site.server import process_count  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(args, *, cwd=ROOT, env=None):
    """A server whose stderr goes to a file (a pipe nobody reads would stall it once full)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )  # fmt: skip
    proc.log = log
    return proc


def stderr_of(proc, most: int = 2000) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")[-most:]


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_ready(url: str, proc, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited early:\n{stderr_of(proc)}") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.2)


def start_upstream(port: int):
    """The fake upstream under uvicorn when installed, else under Daphne (same ASGI app)."""
    env = {
        **os.environ,
        "FAKE_EL_API_KEY": UPSTREAM_KEY,
        "FAKE_EL_LATENCY_MS": "75",
        "FAKE_EL_CHUNKS": "8",
        "FAKE_EL_CHUNK_BYTES": "4096",
        "FAKE_EL_CHUNK_GAP_MS": "20",
    }
    try:
        import uvicorn  # noqa: F401

        args = [sys.executable, str(TOOLS / "fake_elevenlabs_upstream.py"),
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        server = "uvicorn"
    except ImportError:
        args = [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
                "fake_elevenlabs_upstream:app"]  # fmt: skip
        server = "daphne"
    proc = spawn(args, cwd=TOOLS, env=env)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, "fake upstream")
    return proc, server


def settled_ids(workspace) -> set[int]:
    return set(
        UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED).values_list(
            "pk", flat=True
        )
    )


def wait_no_reserved(workspace, seconds: float = 15) -> int:
    deadline = time.monotonic() + seconds
    while True:
        open_ = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.RESERVED).count()
        if not open_ or time.monotonic() > deadline:
            return open_
        time.sleep(0.2)


def start_floor(port: int, upstream_port: int):
    """``passthrough_floor.py`` under Daphne: the stack's own cost, with no Chorus in it."""
    env = {
        **os.environ,
        "FLOOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "FLOOR_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
            "passthrough_floor:app"]  # fmt: skip
    proc = spawn(args, cwd=ROOT / "bench", env=env)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, "pass-through floor")
    return proc


ROUND_AT_32 = 400  # requests per target and round at C >= 32 (see the module doc)


def run_level(args, c, n, urls, raw_key, pids, workspace, out_dir):
    json_out = out_dir / f"c{c}.json"
    targets = [
        {"name": "direct", "url": urls["direct"], "headers": {"xi-api-key": UPSTREAM_KEY}},
        {"name": "chorus", "url": urls["chorus"], "headers": {"xi-api-key": raw_key}},
    ]
    if "floor" in urls:
        targets.append({"name": "floor", "url": urls["floor"], "headers": {}})
    targets_file = out_dir / "targets.json"
    targets_file.write_text(json.dumps(targets))
    warmup = max(2 * c, 10)
    before = settled_ids(workspace)
    round_size = min(n, ROUND_AT_32) if c >= 32 else min(4 * c, max(c, n // 5))
    cmd = [
        sys.executable, str(TOOLS / "overhead_bench.py"),
        "--targets-file", str(targets_file),
        "-n", str(n), "-c", str(c), "--warmup", str(warmup), "--round-size", str(round_size),
        "--ramp-ms", str(args.ramp_ms), "--alternate",
        "--expect-bytes", str(EXPECT_BYTES), "--timeout", "30",
        "--max-seconds", str(args.max_seconds),
        "--json-out", str(json_out),
    ]  # fmt: skip
    for name, pid in pids.items():
        cmd += ["--watch", f"{name}={pid}"]
    print(f"\n=== concurrency {c}: {n} requests per target (+{warmup} warm-up) ===", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, timeout=args.max_seconds + 120, check=False)  # noqa: S603
    still_open = wait_no_reserved(workspace)
    new = UsageEvent.objects.filter(pk__in=settled_ids(workspace) - before).order_by(
        "finished_at", "pk"
    )
    finished = list(new.values_list("finished_at", flat=True))
    counted = finished[warmup:]  # the warm-up requests all finish before the counted rounds
    result = json.loads(json_out.read_text()) if json_out.exists() else {}
    ch = result.get("targets", {}).get("chorus", {})
    wall = ch["ok"] / ch["req_per_s"] if ch.get("req_per_s") else 0.0
    return {
        "c": c,
        "rc": proc.returncode,
        "result": result,
        "settled": len(finished),
        "settled_counted": len(counted),
        "reserved_left": still_open,
        "chorus_wall_s": wall,
        "settled_per_s": len(counted) / wall if wall else 0.0,
    }


def _figures(lv) -> dict | None:
    """The figures of one concurrency, Chorus's and the floor's side by side."""
    res = lv["result"]
    targets, added = res.get("targets", {}), res.get("added", {})
    ch, fl = targets.get("chorus", {}), targets.get("floor", {})
    add, fl_add = added.get("chorus", {}).get("ttfb", {}), added.get("floor", {}).get("ttfb", {})
    if not ch.get("ok") or not add:
        return None
    nan = float("nan")
    return {
        "ok": ch["ok"],
        "errors": ch["errors"],
        "error_kinds": ch.get("error_kinds") or [],
        "floor_errors": fl.get("errors", 0),
        "p50": add["p50_diff_ms"],
        "p95": add["p95_diff_ms"],
        "p99": add["p99_diff_ms"],
        "paired": add["paired_median_ms"],
        "cpu": ch.get("watched_cpu_ms_per_req", nan),
        "cores": ch.get("watched_cpu_cores", nan),
        "settled_per_s": lv["settled_per_s"],
        "f_p50": fl_add.get("p50_diff_ms", nan),
        "f_p95": fl_add.get("p95_diff_ms", nan),
        "f_p99": fl_add.get("p99_diff_ms", nan),
        "f_paired": fl_add.get("paired_median_ms", nan),
        "f_cpu": fl.get("watched_cpu_ms_per_req", nan),
        "f_cores": fl.get("watched_cpu_cores", nan),
        "f_req_per_s": fl.get("req_per_s", nan),
        "direct_p50": targets.get("direct", {}).get("ttfb_p50_ms", nan),
    }


def report(levels, db, layer, cache, upstream_server, processes):
    print("\n" + "=" * 112)
    print(
        f"gateway overhead  database: {db}  channel layer: {layer}  cache: {cache}  "
        f"cpus: {os.cpu_count()}  Chorus web processes: {processes}  "
        f"upstream served by: {upstream_server}"
    )
    print("every figure: Chorus (floor); added = over the direct upstream, in ms")
    hdr = (
        f"{'C':>3} {'ok':>5} {'err':>7}  {'added TTFB p50':>16} {'p95':>16} {'p99':>16}"
        f" {'paired':>15}  {'CPU ms/req':>15} {'cores':>12}  {'settled/s':>14}"
    )
    print(hdr)
    print("-" * len(hdr))
    by_c = {}
    for lv in levels:
        f = _figures(lv)
        if f is None:
            print(f"{lv['c']:>3}  no result (overhead_bench exit {lv['rc']}): {lv['result']}")
            continue
        by_c[lv["c"]] = f

        def pair(a, b, width=16, digits=2):
            text = f"{a:.{digits}f} ({b:.{digits}f})"
            return f"{text:>{width}}"

        print(
            f"{lv['c']:>3} {f['ok']:>5} {pair(f['errors'], f['floor_errors'], 7, 0)}"
            f"  {pair(f['p50'], f['f_p50'])} {pair(f['p95'], f['f_p95'])}"
            f" {pair(f['p99'], f['f_p99'])} {pair(f['paired'], f['f_paired'], 15)}"
            f"  {pair(f['cpu'], f['f_cpu'], 15)} {pair(f['cores'], f['f_cores'], 12)}"
            f"  {pair(f['settled_per_s'], f['f_req_per_s'], 14, 1)}"
        )
        if f["error_kinds"]:
            print(f"    chorus errors: {', '.join(f['error_kinds'])}")
        if lv["reserved_left"]:
            print(f"    {lv['reserved_left']} usage events still reserved after the run")
    print(
        "floor = bench/passthrough_floor.py under one Daphne process: the same stream passed"
        " through with httpx and nothing else (no Django, key, database or ledger)"
    )
    print(
        "settled/s = settled UsageEvents of the counted requests / wall time of the Chorus"
        " rounds; beside it the floor's requests/s in the same rounds (the most they carry)"
    )

    def get(c, key):
        return by_c.get(c, {}).get(key)

    checks = []  # (label, value, floor, limit)
    if 1 in by_c:
        checks.append(("C=1 added TTFB p50 <= floor + 4 ms", get(1, "p50"), get(1, "f_p50"), 4))
    if 8 in by_c:
        checks.append(("C=8 added TTFB p50 <= floor + 6 ms", get(8, "p50"), get(8, "f_p50"), 6))
        checks.append(("C=8 added TTFB p99 <= 30 ms", get(8, "p99"), get(8, "f_p99"), None, 30))
    if 32 in by_c:
        checks += [
            ("C=32 added TTFB p50 <= 40 ms", get(32, "p50"), get(32, "f_p50"), None, 40),
            ("C=32 added TTFB p99 <= 120 ms", get(32, "p99"), get(32, "f_p99"), None, 120),
            ("C=32 no errors", get(32, "errors"), get(32, "floor_errors"), None, 0),
            (
                "C=32 settled ledger events/s >= 120",
                get(32, "settled_per_s"),
                get(32, "f_req_per_s"),
                None,
                None,
                120,
            ),
        ]
    for c, f in sorted(by_c.items()):
        checks.append((f"CPU per request at C={c} <= floor + 6 ms", f["cpu"], f["f_cpu"], 6))
    print("\ntargets (issue 13; 2 cores):")
    print(f"  {'':<44} {'Chorus':>8} {'floor':>8} {'limit':>8}")
    for label, value, floor, over_floor, *absolute in checks:
        most = absolute[0] if absolute else None
        least = absolute[1] if len(absolute) > 1 else None
        if over_floor is not None:
            limit = None if floor is None or floor != floor else floor + over_floor
            most = limit
        if value is None or (most is None and least is None):
            verdict, shown_limit = "n/a", "n/a"
        else:
            met = (most is None or value <= most) and (least is None or value >= least)
            verdict = "met" if met else "MISSED"
            shown_limit = f"{most:.2f}" if most is not None else f">={least:.0f}"
        shown = "n/a" if value is None else f"{value:.2f}"
        shown_floor = "n/a" if floor is None else f"{floor:.2f}"
        print(f"  {label:<44} {shown:>8} {shown_floor:>8} {shown_limit:>8}  {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--requests", type=int, nargs="+", default=None,
        help="counted requests per target for each concurrency (default 150, 400, 1600)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", default="auto",
        help="Chorus's web processes on its one port (default auto: one per CPU, as deployed)",
    )  # fmt: skip
    parser.add_argument("--ramp-ms", type=float, default=250.0, help="steady arrivals (250 ms)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="per concurrency level")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the bare Daphne + httpx pass-through target"
    )
    args = parser.parse_args()
    defaults = {1: 150, 8: 400, 32: 1600}
    counts = args.requests or [defaults.get(c, 25 * c) for c in args.concurrency]
    if len(counts) != len(args.concurrency):
        parser.error("give one --requests per --concurrency")

    processes = process_count(args.processes)
    print(f"Chorus web processes: {processes}", flush=True)
    call_command("migrate", verbosity=0)
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    user = User.objects.create_user(email=f"bench-gw-{tag}@example.com", password="x" * 16)
    workspace = workspace_create(name=f"Gateway bench {tag}", owner=user)
    procs = []
    try:
        up_port, web_port = free_port(), free_port()
        upstream, upstream_server = start_upstream(up_port)
        procs.append(upstream)
        engine_settings_update(
            workspace=workspace, actor=user, kind="elevenlabs", api_key=UPSTREAM_KEY,
            base_url=f"http://127.0.0.1:{up_port}",
        )  # fmt: skip
        Budget.objects.create(workspace=workspace, user=user, limit_credits=Decimal(10**9))
        raw_key = api_key_create(workspace=workspace, user=user, name="gateway bench").raw

        web = spawn([sys.executable, "-m", "studio_site.server", "-b", "127.0.0.1",
                     "-p", str(web_port), "--processes", str(processes),
                     "studio_site.asgi:application"])  # fmt: skip
        procs.append(web)
        wait_ready(f"http://127.0.0.1:{web_port}/healthz", web, "Daphne")

        urls = {
            "direct": f"http://127.0.0.1:{up_port}{STREAM_PATH}",
            "chorus": f"http://127.0.0.1:{web_port}{STREAM_PATH}",
        }
        pids = {"chorus": web.pid}
        if not args.no_floor:
            floor_port = free_port()
            floor = start_floor(floor_port, up_port)
            procs.append(floor)
            urls["floor"] = f"http://127.0.0.1:{floor_port}{STREAM_PATH}"
            pids["floor"] = floor.pid
        levels = []
        with tempfile.TemporaryDirectory(prefix="chorus-gw-bench-") as tmp:
            for c, n in zip(args.concurrency, counts, strict=True):
                levels.append(run_level(args, c, n, urls, raw_key, pids, workspace, Path(tmp)))
    finally:
        for proc in reversed(procs):
            stop(proc)
        web_log = stderr_of(procs[1], 6000) if len(procs) > 1 else ""
        Workspace.objects.filter(pk=workspace.pk).delete()
        user.delete()

    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    report(levels, db, layer, cache, upstream_server, processes)
    if any(lv["result"].get("targets", {}).get("chorus", {}).get("errors") for lv in levels):
        print("\nChorus's log, last lines (it answered with errors):\n" + web_log)


if __name__ == "__main__":
    main()
