"""Fixtures that run the real qpy: real daemons, real sockets, real job processes.

Each test gets its own QPY_HOME (so its own master and embedded multiuser) and work
directory under a temporary directory. At teardown every job is killed, the master and
the multiuser are ended by the PIDs they wrote, and the files are removed.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from qpy.selection import FINISHED
from qpy_master.embedded import node_name

# Every daemon the tests start checks its own replies against qpy.wire.REPLIES.
os.environ["QPY_CHECK_REPLIES"] = "1"
BIN = Path(sys.executable).parent
# The personal multiuser's node: this machine, by its host name (attribute localhost).
NODE = node_name()
QPY = str(BIN / "qpy")
WAIT = 60.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = WAIT, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``.

    Only a limit for a test that would otherwise hang: tests assert outcomes, not times.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Qpy:
    """One user's qpy installation in a temporary home, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.work = root / "work"
        self.work.mkdir(parents=True)
        self.env = {**os.environ, "QPY_HOME": str(self.home)}
        self.env.pop("QPY_ADMIN_HOME", None)

    def run(self, *args: str, check: bool = True, cwd: Path | None = None,
            env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``qpy ARGS`` and return the completed process (text output)."""
        proc = subprocess.run([QPY, *args], cwd=cwd or self.work, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"qpy {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()}")
        return proc

    def sub(self, *args: str, cwd: Path | None = None) -> int:
        """Submit and return the job ID from 'Job N received.'"""
        out = self.run("sub", *args, cwd=cwd).stdout
        assert out.startswith("Job ") and out.rstrip().endswith("received."), out
        return int(out.split()[1])

    def jobs(self, *selection: str) -> list[dict]:
        return json_payload(self.run("check", "--json", *selection).stdout, "jobs")

    def job(self, job_id: int) -> dict:
        found = [j for j in self.jobs(str(job_id)) if j["id"] == job_id]
        assert found, f"job {job_id} not found"
        return found[0]

    def wait_status(self, job_id: int, *statuses: str, timeout: float = WAIT) -> dict:
        """Wait until job ``job_id`` has one of ``statuses`` and return its record."""
        wanted = statuses or FINISHED

        def reached():
            job = self.job(job_id)
            return job if job["status"] in wanted else None

        return wait_for(reached, timeout, f"job {job_id} to be {'/'.join(wanted)}")

    def wait_all_finished(self, timeout: float = WAIT) -> list[dict]:
        def finished():
            jobs = self.jobs()
            return jobs if all(j["status"] in FINISHED for j in jobs) \
                else None

        return wait_for(finished, timeout, "all jobs to finish")

    def pid(self, name: str) -> int | None:
        """PID of the master ('master') or embedded multiuser ('multiuser'), if running."""
        path = (self.home / "master.pid" if name == "master"
                else self.home / "embedded" / "multiuser.pid")
        try:
            pid = int(path.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def multiuser_address(self) -> tuple[str, int]:
        """Where the personal (embedded) multiuser listens: always loopback."""
        from qpy import wire

        port = (self.home / "embedded" / "multiuser_connection_port").read_text()
        return wire.parse_address("127.0.0.1", port)

    def multiuser_key(self) -> bytes:
        """This user's own key at the personal multiuser."""
        from qpy import paths, wire

        return paths.read_key(self.home / "embedded" / "keys" / wire.whoami())

    def kill_daemon(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to a daemon and wait until it is gone; returns its PID."""
        pid = self.pid(name)
        assert pid, f"{name} is not running"
        os.kill(pid, sig)
        wait_for(lambda: not pid_alive(pid), what=f"{name} {pid} to exit")
        return pid

    def teardown(self) -> None:
        if self.pid("master"):
            self.run("kill", "all", check=False)
            self.run("finish", check=False)
        for name in ("master", "multiuser"):
            pid = self.pid(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
        _kill_supervisors(self.home / "run")
        _kill_daemons_of(self.home)


def _kill_daemons_of(home: Path) -> None:
    """SIGKILL what still runs with this QPY_HOME: a personal multiuser whose master was
    starting it while the teardown read the pid files has none yet, and would be left."""
    import psutil

    mark = f"QPY_HOME={home}"
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and mark in "\n".join(
                    f"{k}={v}" for k, v in proc.environ().items()).split("\n"):
                proc.kill()
        except (psutil.Error, OSError):
            continue


def supervisors(run_dir: Path) -> dict[int, int]:
    """Job ID -> supervisor PID, as the supervisors recorded them in the launchers' slots
    (one run directory per node)."""
    from qpy_master.launcher import SLOT, parse_slot

    found = {}
    for slots in run_dir.glob("*/slots"):
        try:
            data = slots.read_bytes()
        except OSError:
            continue
        for i in range(0, len(data) - SLOT + 1, SLOT):
            head, _ = parse_slot(data[i:i + SLOT])
            if head is not None:
                found[head[0]] = head[1]
    return found


def _kill_supervisors(run_dir: Path) -> None:
    """End any job supervisor (and its job tree) a test left behind, by recorded PID."""
    for pid in supervisors(run_dir).values():
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


# --- helpers shared by several test files --------------------------------------------

def json_payload(text: str, key: str):
    """The payload of a ``--json`` document: one object, ``version`` 1, then ``key``."""
    assert text.endswith("\n") and text.count("\n") == 1, text[:200]
    doc = json.loads(text)
    assert isinstance(doc, dict) and doc["version"] == 1, text[:200]
    return doc[key]


def on_tty(qpy, *args: str) -> str:
    """Run ``qpy ARGS`` with stdout on a pseudo-terminal; return what it wrote there."""
    master, slave = pty.openpty()
    env = {k: v for k, v in qpy.env.items() if k not in ("NO_COLOR", "ANSI_COLORS_DISABLED")}
    proc = subprocess.Popen([QPY, *args], cwd=qpy.work, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return b"".join(chunks).decode().replace("\r\n", "\n")


def job_processes(qpy, want) -> list[int]:
    """Live processes of this test's jobs for which ``want(argv, environ)`` holds."""
    mark = f"QPY_HOME={qpy.home}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[:-1]
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and want(argv, environ) and pid_alive(int(name)):
            found.append(int(name))
    return found


def assert_one_line_error(proc, text: str | None = None) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.startswith("qpy: ")
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    if text is not None:
        assert proc.stderr == f"qpy: {text}\n"


def start_daemons(qpy) -> tuple[int, int]:
    wait_for(lambda: qpy.run("status", check=False).returncode == 0,
             what="the master to reach the multiuser")
    master, multiuser = qpy.pid("master"), qpy.pid("multiuser")
    assert master and multiuser
    return master, multiuser


@pytest.fixture
def qpy():
    root = Path(tempfile.mkdtemp(prefix="qpy-test-"))
    os.chmod(root, 0o755)
    q = Qpy(root)
    try:
        yield q
    finally:
        q.teardown()
        shutil.rmtree(root, ignore_errors=True)


# --- the suite's summary line (tests/suite_stats.py) ------------------------------------


def pytest_sessionstart(session):
    import suite_stats

    suite_stats.start()


def pytest_terminal_summary(terminalreporter):
    """One line at the end of the run: faults injected, messages fuzzed, jobs run, lost."""
    import suite_stats

    terminalreporter.write_line(suite_stats.finish())
