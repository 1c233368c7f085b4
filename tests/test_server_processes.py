"""The web server's several processes on one port (``--processes`` / ``CHORUS_WEB_PROCESSES``,
issue 13): the parent binds the address once, its Daphne children serve it, and they never
outlive it, whether it is stopped or killed outright.
"""

import os
import signal
import sys
import time
import urllib.request

import pytest

from studio_site.server import process_count

from .conftest import free_port, spawn, wait_until


def test_the_process_count_is_a_number_or_auto():
    assert process_count(None) == 1
    assert process_count("") == 1
    assert process_count("3") == 3
    assert process_count("auto") == len(os.sched_getaffinity(0))
    for wrong in ("0", "-2", "many"):
        with pytest.raises(SystemExit):
            process_count(wrong)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def several(live_env, tmp_path):
    """``several(n)`` → (url, parent Proc, its children's pids), serving on a free port."""
    started = []

    def start(processes: int = 2):
        port = free_port()
        proc = spawn(
            [sys.executable, "-m", "studio_site.server", "--processes", str(processes),
             "-b", "127.0.0.1", "-p", str(port), "studio_site.asgi:application"],
            env=live_env,
            log=tmp_path / f"server-{len(started)}.log",
        )  # fmt: skip
        started.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up():
            if proc.popen.poll() is not None:
                raise AssertionError(f"the server exited:\n{proc.output()}")
            return _answers(url) and len(_children(proc.popen.pid)) == processes

        wait_until(up, timeout=90, interval=0.2, what="the server's processes to answer")
        return url, proc, _children(proc.popen.pid)

    yield start
    for proc in started:
        proc.stop(timeout=40)


def test_several_processes_serve_one_port_and_stop_with_the_parent(several):
    url, proc, children = several(2)
    assert len(children) == 2
    for _ in range(6):  # new connections, spread over the children by the kernel
        assert _answers(url)
    assert "2 Daphne processes" in proc.output()
    os.kill(proc.popen.pid, signal.SIGTERM)  # the parent alone, as docker stop does
    assert proc.popen.wait(timeout=40) == 0
    wait_until(lambda: not any(map(_alive, children)), timeout=10, what="the children to stop")


def test_the_children_die_with_a_parent_killed_outright(several):
    url, proc, children = several(2)
    os.kill(proc.popen.pid, signal.SIGKILL)  # no chance to pass anything on
    proc.popen.wait(timeout=10)
    wait_until(lambda: not any(map(_alive, children)), timeout=20, what="the children to die")
    assert not _answers(url)


def test_a_child_that_dies_is_replaced_and_the_port_keeps_answering(several):
    url, proc, children = several(2)
    lost = min(children)
    time.sleep(16)  # past the start window: a death now is a crash, not a failed start
    os.kill(lost, signal.SIGKILL)
    wait_until(
        lambda: len(_children(proc.popen.pid) - {lost}) == 2,
        timeout=60,
        what="a new child in place of the lost one",
    )
    wait_until(lambda: _answers(url), timeout=60, what="the port to answer")
    assert proc.popen.poll() is None
    assert "restarting it" in proc.output()


def test_a_child_that_cannot_start_stops_the_parent(live_env, tmp_path):
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "studio_site.server", "--processes", "2",
         "-b", "127.0.0.1", "-p", str(port), "no_such_module:application"],
        env=live_env,
        log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        assert proc.popen.wait(timeout=60) != 0
    finally:
        proc.stop()
    assert "as it started" in proc.output()
