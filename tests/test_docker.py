"""The container setup: docker/compose.yml renders, the Dockerfile is sane, and the image
installs dependencies with the same Makefile step as ``make run``.

No Docker engine is needed: compose is only asked to render its config (``docker-compose
config``), and the Dockerfile and Makefile are read as text.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
IN_CI = os.environ.get("CI", "").lower() == "true"

SERVICES = {"web", "worker", "beat", "db", "redis", "migrate"}


# --- Helpers ----------------------------------------------------------------------------


@pytest.fixture
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        if IN_CI:
            pytest.fail("docker-compose is not on PATH, but CI is supposed to install it.")
        pytest.skip(
            "docker-compose is not on PATH, so docker/compose.yml cannot be validated "
            "(install it, e.g. `apt-get install docker-compose`)."
        )
    return path


@pytest.fixture
def empty_env_file(tmp_path) -> Path:
    path = tmp_path / "empty.env"
    path.write_text("")
    return path


def compose_config(
    docker_compose: str, empty_env_file: Path, **env: str
) -> subprocess.CompletedProcess:
    """``docker-compose config`` with exactly ``env`` for interpolation.

    ``--env-file`` points at an empty file so a developer's docker/.env cannot change the
    outcome, and SECRET_KEY from the outer environment is dropped unless given here.
    """
    environ = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    environ.update(env)
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), "config"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def service_names(rendered: str) -> set[str]:
    """The keys of the top-level ``services:`` mapping in rendered compose YAML."""
    names: set[str] = set()
    inside = False
    for line in rendered.splitlines():
        if not line.startswith(" "):
            inside = line.rstrip() == "services:"
            continue
        match = re.match(r"^  ([A-Za-z0-9._-]+):\s*$", line)
        if inside and match:
            names.add(match.group(1))
    return names


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, comments dropped and ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def make_prerequisites(target: str) -> list[str]:
    """The prerequisites of ``target`` in the Makefile (the part after ``target:``)."""
    match = re.search(rf"^{re.escape(target)}\s*:(?!=)(.*)$", MAKEFILE.read_text(), re.M)
    assert match, f"the Makefile has no {target!r} target"
    return match.group(1).split("#")[0].split()


# --- Compose ----------------------------------------------------------------------------


def test_compose_config_renders_and_names_every_service(docker_compose, empty_env_file):
    result = compose_config(docker_compose, empty_env_file, SECRET_KEY="test")
    assert result.returncode == 0, result.stderr
    assert service_names(result.stdout) == SERVICES


def test_compose_refuses_to_render_without_a_secret_key(docker_compose, empty_env_file):
    result = compose_config(docker_compose, empty_env_file)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_builds_in_at_least_two_stages():
    stages = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(stages) >= 2, stages


def test_dockerfile_runs_the_app_as_a_non_root_user():
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile never switches away from root"
    final_user = users[-1].split(":")[0]
    assert final_user not in {"root", "0"}


def test_dockerfile_declares_a_healthcheck_against_healthz():
    checks = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert checks, "the Dockerfile has no HEALTHCHECK"
    assert "/healthz" in checks[-1]


def test_dockerfile_installs_dependencies_with_the_make_install_step_that_make_run_uses():
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    make_calls = [shlex.split(args) for args in runs if re.search(r"\bmake\s+install\b", args)]
    assert make_calls, "the Dockerfile does not run `make install`"
    # Whatever target the image builds with must be the one `make run` depends on.
    for words in make_calls:
        targets = [w for w in words[words.index("make") + 1 :] if "=" not in w]
        assert targets and set(targets) <= set(make_prerequisites("run")), words


# --- Makefile ---------------------------------------------------------------------------


def test_make_run_depends_on_install():
    assert "install" in make_prerequisites("run")
