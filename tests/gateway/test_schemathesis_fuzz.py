"""Schemathesis fuzzes every /v1 and /v2 operation Chorus serves, from ElevenLabs' official
OpenAPI spec, against a real Daphne and a real Celery worker on the local engine: whatever a
client sends, no response is a 5xx.

The run is bounded for CI (a few examples an operation, deterministic, one worker). A failure
prints schemathesis' report, whose reproductions are curl commands, and Chorus's tracebacks.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver

from apps.gateway import api_urls, services

from .openapi_check import SPEC_PATH, spec

MAX_EXAMPLES = 3

# Operations whose valid requests do real work on the local engine (three previews a design,
# a music job through the worker): schemathesis' coverage phase sends one valid request per
# value of every enum (each output_format …), which alone took eight minutes for the voice
# design pair. They are fuzzed in the examples and fuzzing phases, bounded by MAX_EXAMPLES.
# The agent create/update bodies (the spec's ConversationalConfig, hundreds of fields) made
# the coverage phase run past ten minutes on their own.
NO_COVERAGE_PHASE = (
    "/v1/music",
    "/v1/music/stream",
    "/v1/text-to-voice/create-previews",
    "/v1/text-to-voice/design",
    "/v1/convai/agents/create",
    "/v1/convai/agents/{agent_id}",
)


def _routes(patterns, prefix: str = "") -> list[str]:
    found = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append(prefix + str(entry.pattern))
    return found


def _shape(path: str) -> str:
    """A path with its parameters blanked: ``/v1/voices/<str:voice_id>`` → ``/v1/voices/{}``."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


def served_spec_paths() -> list[str]:
    """The spec's paths that Chorus's API URL conf routes (read from it, so a new route is
    fuzzed as soon as it is served)."""
    by_shape = {_shape(path): path for path in spec()["paths"]}
    routes = ["/" + route for route in _routes(api_urls.urlpatterns)]
    missing = [route for route in routes if _shape(route) not in by_shape]
    assert not missing, f"Chorus serves routes the official spec does not have: {missing}"
    return sorted({by_shape[_shape(route)] for route in routes})


def test_every_api_route_maps_to_one_path_of_the_spec():
    paths = served_spec_paths()
    assert len(paths) == len(_routes(api_urls.urlpatterns))
    assert "/v1/text-to-speech/{voice_id}" in paths
    assert set(NO_COVERAGE_PHASE) <= set(paths)


def _config(path: Path) -> Path:
    lines = []
    for operation in NO_COVERAGE_PHASE:
        lines += [
            "[[operations]]",
            f'include-path = "{operation}"',
            "phases.coverage.enabled = false",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tracebacks(log: str) -> str:
    """Daphne's log without its access lines (thousands of 4xx)."""
    return "\n".join(line for line in log.splitlines() if not line.startswith("127.0.0.1:"))


@pytest.fixture
def live_env(live_env):
    # A music request waits for its job; less than the client's timeout, so a job the worker
    # does not finish shows as a 504 (a failure here) rather than as a hung request.
    live_env["CHORUS_API_JOB_WAIT_SECONDS"] = "20"
    return live_env


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Fuzz")


@pytest.mark.slow
def test_no_served_operation_answers_a_server_error(celery_worker, daphne_server, issued, tmp_path):
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(_config(tmp_path / "schemathesis.toml")),
        "run", str(SPEC_PATH),
        "--url", daphne_server.url,
        "--header", f"xi-api-key: {issued.raw}",
        "--checks", "not_a_server_error",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "30",
        "--no-shrink",
        "--no-color",
        "--output-truncate", "false",
    ]  # fmt: skip
    for path in served_spec_paths():
        command += ["--include-path", path]
    # Run in tmp_path: schemathesis and Hypothesis keep their folders in the working directory.
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, (
        result.stdout
        + result.stderr
        + "\n--- Chorus (Daphne) ---\n"
        + _tracebacks(daphne_server.proc.output())
        + "\n--- Celery worker ---\n"
        + celery_worker.output()[-5000:]
    )
