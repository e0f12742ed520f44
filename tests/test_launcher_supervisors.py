"""A launcher's supervisors run one job after another (no fork per job): a real launcher
process, driven through its protocol. Each job's usage is its own, and a kill meant for a
job that has ended never reaches the next job of the same supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import wait_for

from qpy_master import launcher
from qpy_master.launcher_pool import launcher_command


class Driven:
    """A launcher started as the master starts it, fed ops, its events read in order."""

    def __init__(self, tmp_path) -> None:
        self.dir = tmp_path
        argv, preamble = launcher_command(str(tmp_path / "run"), python=sys.executable)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write(preamble)
        self.proc.stdin.flush()
        assert self.event()["ev"] == "ready"  # ops are read from now on
        self.op({"op": "env", "id": 1, "env": dict(os.environ)})

    def op(self, op: dict) -> None:
        self.proc.stdin.write(json.dumps(op).encode() + b"\n")
        self.proc.stdin.flush()

    def event(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def start(self, job: int, cmd: str) -> int:
        """Start ``job``; the PID of its supervisor."""
        self.op({"op": "start", "job": job, "cmd": cmd, "cwd": str(self.dir), "env_id": 1,
                 "grace": 1.0, "vars": {}, "out": str(self.dir / f"job_{job}.out"),
                 "err": str(self.dir / f"job_{job}.err"), "umask": 0o22, "limit": None,
                 "limits": {"cores": 1, "mem": 4, "cgroup": None, "rlimit_as": False,
                            "cpu_lock": str(self.dir / "cpus.lock")}})
        started = self.event()
        assert started["ev"] == "started" and started["job"] == job, started
        return started["pid"]

    def ended(self, job: int) -> dict:
        ended = self.event()
        assert ended["ev"] == "ended" and ended["job"] == job, ended
        assert all(f in ended for f in launcher.EVENTS["ended"]), ended
        return ended

    def slot_free(self, job: int) -> bool:
        """The launcher freed the job's slot: its supervisor is done with it."""
        data = (self.dir / "run" / "slots").read_bytes()
        return not any(launcher.parse_slot(data[i:i + launcher.SLOT])[0] is not None
                       and launcher.parse_slot(data[i:i + launcher.SLOT])[0][0] == job
                       for i in range(0, len(data), launcher.SLOT))

    def finish(self, job: int) -> None:
        """The master's part once it has the end; wait until the supervisor is idle."""
        self.op({"op": "forget", "job": job})
        wait_for(lambda: self.slot_free(job), what=f"job {job}'s slot freed")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_one_supervisor_runs_jobs_in_turn_each_with_its_own_usage(tmp_path):
    """A big job, then a small one on the same supervisor: the small one's recorded
    memory and CPU time are its own, not the big one's."""
    launcher_ = Driven(tmp_path)
    try:
        big = f"{sys.executable} -c 'b = bytearray(200 << 20); sum(range(3000000))'"
        first = launcher_.start(1, big)
        ended = launcher_.ended(1)
        assert ended["exit"] == 0 and ended["rss"] > 150 * 1024, ended
        launcher_.finish(1)
        assert launcher_.start(2, "true") == first  # the same supervisor, no new fork
        small = launcher_.ended(2)
        assert small["exit"] == 0, small
        assert small["rss"] < 50 * 1024 and small["cpu"] < ended["cpu"], (small, ended)
        launcher_.finish(2)  # the end is told before the supervisor is ready again
        assert os.sched_getaffinity(first) == os.sched_getaffinity(0)  # unpinned again
    finally:
        launcher_.close()


def test_a_kill_for_an_ended_job_never_reaches_the_next_job_of_its_supervisor(tmp_path):
    """``kill 1`` sent right after job 1's end, before its supervisor is free: job 2, next
    on that supervisor, keeps its exit code; a kill for job 3 there still ends job 3."""
    launcher_ = Driven(tmp_path)
    try:
        first = launcher_.start(1, "true")
        launcher_.ended(1)
        launcher_.op({"op": "kill", "job": 1})
        launcher_.finish(1)
        assert launcher_.start(2, "sleep 0.5; exit 3") == first
        assert launcher_.ended(2)["exit"] == 3
        launcher_.finish(2)
        assert launcher_.start(3, "sleep 60") == first
        launcher_.op({"op": "kill", "job": 3})
        assert launcher_.ended(3)["signal"] == signal.SIGTERM
    finally:
        launcher_.close()


def test_a_launcher_keeps_a_few_idle_supervisors_not_one_per_job_it_ran_at_once(tmp_path):
    """IDLE_KEPT + 2 jobs at once need as many supervisors; once they have all ended, the
    launcher keeps IDLE_KEPT of them idle (and its spare), ends the others and reaps
    them (no zombie), and the next job goes to one it kept."""
    import psutil

    launcher_ = Driven(tmp_path)
    try:
        count = launcher.IDLE_KEPT + 2
        fifos = [tmp_path / f"go{job}" for job in range(1, count + 1)]
        for fifo in fifos:
            os.mkfifo(fifo)
        pids = {launcher_.start(job, f"read x < {fifo}") for job, fifo in
                enumerate(fifos, start=1)}
        assert len(pids) == count
        for job, fifo in enumerate(fifos, start=1):
            fifo.write_text("x\n")  # the job's only line: it ends
            launcher_.ended(job)
            launcher_.finish(job)
        me = psutil.Process(launcher_.proc.pid)

        def settled() -> list[psutil.Process] | None:
            children = me.children()
            if any(c.status() == psutil.STATUS_ZOMBIE for c in children):
                return None
            return children if len(children) == launcher.IDLE_KEPT + 1 else None

        kept = {c.pid for c in wait_for(settled, what="surplus supervisors ended, reaped")}
        assert len(kept & pids) == launcher.IDLE_KEPT  # the spare is the other one
        assert launcher_.start(count + 1, "true") in kept & pids
        launcher_.ended(count + 1)
    finally:
        launcher_.close()
