"""The launcher alone, without master or multiuser: N ``true`` jobs one after the other
(start op -> ``ended`` event, then ``forget``), driven through its protocol as the master
drives it. Prints one line: the median start-to-ended time, the jobs per second, and
what each job cost the launcher, its supervisors and the job's shell together in CPU
time and page faults (counted as this process's reaped descendants: it is a subreaper,
so the supervisors still count when they outlive the launcher). Baseline in the same
run: ``posix_spawn`` of the same shell running ``true``, in CPU time and page faults.

CPU time and page faults hardly depend on the machine's load, unlike wall times: on a
VM where a page fault costs microseconds, they are what a job start costs.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT

sys.path.insert(0, str(ROOT))
from qpy_master.launcher import login_shell  # noqa: E402
from qpy_master.launcher_pool import launcher_command  # noqa: E402

JOBS = 300
PR_SET_CHILD_SUBREAPER = 36


def usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_minflt


def reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def send(proc: subprocess.Popen, op: dict) -> None:
    proc.stdin.write(json.dumps(op).encode() + b"\n")
    proc.stdin.flush()


def run_jobs(work: str, n: int) -> list[float]:
    """Milliseconds from each start op to its ``ended`` event."""
    argv, preamble = launcher_command(os.path.join(work, "run"), python=sys.executable)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(preamble)
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["ev"] == "ready"
    send(proc, {"op": "env", "id": 1, "env": dict(os.environ)})
    times = []
    for job in range(1, n + 1):
        t = time.perf_counter()
        send(proc, {"op": "start", "job": job, "cmd": "true", "cwd": work, "env_id": 1,
                    "grace": 1.0, "vars": {}, "out": f"{work}/job_{job}.out",
                    "err": f"{work}/job_{job}.err", "umask": 0o22, "limit": None,
                    "limits": {"cores": 1, "mem": 1, "cgroup": None, "rlimit_as": False,
                               "cpu_lock": f"{work}/cpus.lock"}})
        while (event := json.loads(proc.stdout.readline()))["ev"] != "ended":
            assert event["ev"] == "started", event
        times.append((time.perf_counter() - t) * 1000)
        send(proc, {"op": "forget", "job": job})
    proc.stdin.close()
    proc.wait()
    reap_all()
    return times


def spawn_baseline(shell: str, n: int) -> None:
    for _ in range(n):
        os.waitpid(os.posix_spawn(shell, [shell, "-c", "true"], os.environ), 0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else JOBS
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="qpy-bench-", dir=str(ROOT / "bench"))
    try:
        cpu0, flt0 = usage()
        t = time.perf_counter()
        times = run_jobs(work, n)
        rate = n / (time.perf_counter() - t)
        cpu1, flt1 = usage()
        shell = login_shell()
        spawn_baseline(shell, n)
        cpu2, flt2 = usage()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"launcher: {n} 'true' jobs one after the other: start -> ended median "
          f"{statistics.median(times):.2f} ms, {rate:.0f} jobs/s; per job "
          f"{(cpu1 - cpu0) / n * 1000:.2f} ms CPU and {(flt1 - flt0) / n:.0f} page faults "
          f"(launcher, supervisors and shell); baseline: posix_spawn {shell} -c true "
          f"{(cpu2 - cpu1) / n * 1000:.2f} ms CPU and {(flt2 - flt1) / n:.0f} page faults; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
