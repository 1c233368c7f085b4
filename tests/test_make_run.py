"""The README's first command on a clean copy of the repository: `make run` installs, migrates,
creates the demo login, serves /healthz, stops cleanly on Ctrl-C, and starts again fast with the
same data. A missing install step fails here, not on a newcomer's machine.
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

# Variables of the test run itself; a newcomer's shell has none of them.
DROP = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "DEBUG")


def _clean_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _env(port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROP and not k.startswith("CHORUS_")}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    return env


def _healthz(url: str):
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            return json.loads(response.read())
    except OSError:
        return None


def _start(copy: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "run"],
        cwd=copy,
        env=_env(port),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )


def _ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)


def _processes_under(path: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_make_run_on_a_clean_copy_serves_healthz_and_stops_cleanly(tmp_path):
    copy = _clean_copy(tmp_path / "chorus")
    assert not (copy / ".venv").exists() and not (copy / "var").exists()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-run.log"

    proc = _start(copy, port, log)
    try:
        report = wait_until(
            lambda: proc.poll() is None and _healthz(url) or (proc.poll() is not None and "exit"),
            timeout=900,
            interval=1,
            what="make run to answer /healthz",
        )
        assert report != "exit", log.read_text()
        assert report["status"] == "ok"
        assert all(check["ok"] for check in report["checks"].values())
        output = log.read_text()
        assert "Sign in as  admin@chorus.local" in output
        password = re.search(r"Password    (\S+)", output).group(1)
        assert password == (copy / "var" / "demo-login.txt").read_text().strip()
    finally:
        _ctrl_c(proc)
    wait_until(lambda: "Stopped." in log.read_text(), timeout=30, what="a clean stop")
    assert _processes_under(copy) == [], "Ctrl-C left processes running"

    with sqlite3.connect(copy / "var" / "chorus.sqlite3") as db:
        workspaces = db.execute("SELECT name FROM workspaces_workspace").fetchall()
    assert workspaces == [("Demo studio",)]

    # Second run: no reinstall, same data, and the printed login works.
    started = time.monotonic()
    proc = _start(copy, port, log)
    try:
        wait_until(lambda: _healthz(url), timeout=120, interval=0.5, what="the second start")
        second_start = time.monotonic() - started
        assert second_start < 60, f"the second start took {second_start:.0f} s"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(url + "/accounts/login/", timeout=10).read()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        body = urllib.parse.urlencode(
            {"email": "admin@chorus.local", "password": password, "csrfmiddlewaretoken": csrf}
        ).encode()
        request = urllib.request.Request(
            url + "/accounts/login/", data=body, headers={"Referer": url + "/accounts/login/"}
        )
        home = opener.open(request, timeout=10).read().decode()
        assert "<h1>Demo studio</h1>" in home

        # DEBUG is off: an unknown address is the friendly 404, not the whole URL conf.
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "/no/such/page/", timeout=10)  # noqa: S310
        page = missing.value.read().decode()
        assert missing.value.code == 404
        assert "URLconf" not in page and "admin/" not in page and "Traceback" not in page

        # An invitation's e-mail, with its token, is written to var/mail/, never to the log.
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        invite = urllib.parse.urlencode(
            {"email": "newcomer@example.com", "role": "member", "csrfmiddlewaretoken": csrf}
        ).encode()
        opener.open(
            urllib.request.Request(
                url + "/members/invite/", data=invite, headers={"Referer": url + "/members/"}
            ),
            timeout=10,
        ).read()
        mails = wait_until(
            lambda: list((copy / "var" / "mail").glob("*")), timeout=30, what="the invitation"
        )
        mail = "".join(path.read_text() for path in mails)
        assert "newcomer@example.com" in mail
        token_link = re.search(r"https?://\S+/invite/\S+/", mail).group(0)
        assert token_link.rsplit("/", 2)[-2] not in log.read_text()
    finally:
        _ctrl_c(proc)
    with sqlite3.connect(copy / "var" / "chorus.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM workspaces_workspace").fetchone() == (1,)
    assert _processes_under(copy) == []
