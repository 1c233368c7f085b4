"""`make test` on a fresh machine: the Debian packages the suite needs are installed first, or
the run stops at once with the one command to run; no test fails for a missing package."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.engines import test_local_stt

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "system-packages"


def fake_bin(tmp_path, *, installed: set[str], uid: int) -> dict:
    """A PATH where dpkg-query knows only ``installed``, id says ``uid`` and sudo asks a
    password (so nothing can be installed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": (
            '#!/bin/sh\nfor p in "$@"; do last="$p"; done\n'
            f'case " {" ".join(sorted(installed))} " in *" $last "*) '
            'printf "install ok installed";; *) exit 1;; esac\n'
        ),
        "id": f"#!/bin/sh\necho {uid}\n",
        "sudo": "#!/bin/sh\nexit 1\n",
        "apt-get": f'#!/bin/sh\necho apt-get "$@" >> {tmp_path}/apt.log\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CHORUS_SYSTEM_PACKAGES"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return env


def run(env):
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)


def test_a_user_without_root_is_told_the_one_command(tmp_path):
    env = fake_bin(tmp_path, installed={"chromium", "docker-compose"}, uid=1000)
    done = run(env)
    assert done.returncode == 1
    assert "sudo apt-get install -y espeak-ng sox pocketsphinx-testdata" in done.stderr
    assert not (tmp_path / "apt.log").exists()


def test_root_installs_what_is_missing(tmp_path):
    env = fake_bin(tmp_path, installed={"chromium", "docker-compose", "sox"}, uid=0)
    done = run(env)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "apt.log").read_text()
    assert "install -y -qq --no-install-recommends espeak-ng pocketsphinx-testdata" in log


def test_nothing_to_do_when_all_are_there(tmp_path):
    everything = {"chromium", "docker-compose", "espeak-ng", "sox", "pocketsphinx-testdata"}
    done = run(fake_bin(tmp_path, installed=everything, uid=1000))
    assert done.returncode == 0 and not (tmp_path / "apt.log").exists()


def test_make_test_runs_the_check_first():
    makefile = (SCRIPT.parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ntest: install-dev\n", 1)[1].split("\n\n", 1)[0]
    assert recipe.index(".ci/system-packages") < recipe.index("-m pytest")


@pytest.mark.parametrize("ci", ["", "true"])
def test_speech_tools_missing_skip_outside_ci_and_fail_in_it(monkeypatch, ci):
    monkeypatch.setattr(test_local_stt.shutil, "which", lambda tool: None)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="espeak-ng and sox missing"):
        test_local_stt.tools_missing()
