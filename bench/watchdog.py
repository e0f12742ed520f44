"""The memory watchdog's cost per running job: the CPU time its supervisor uses per second
of wall time, printed on one line.

Two nodes of this machine each run the same JOBS jobs (a shell with two ``sleep``
children, so the watchdog has a small tree to walk): on ``wd`` memory is enforced by the
watchdog (``cgroup=off``), on ``cg`` by a memory cgroup per job, which leaves the
supervisor nothing to do but wait. The baseline is the ``cg`` supervisors' CPU, measured
over the same window in the same run. CPU time is read from ``/proc/PID/schedstat``
(nanoseconds) of each job's supervisor, as recorded in its launcher's slots.

Needs root and the cgroup v1 memory hierarchy (for the baseline's cgroups).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import sys
import time
from pathlib import Path

from common import ROOT, Bench

sys.path.insert(0, str(ROOT))
from qpy_master.launcher import SLOT, parse_slot  # noqa: E402

JOBS = 20
WINDOW = 20.0  # seconds of measuring
JOB = "sleep 600 & sleep 600 & wait"
V1 = "/sys/fs/cgroup/memory"


def supervisors(run_dir: Path) -> list[int]:
    data = (run_dir / "slots").read_bytes()
    heads = [parse_slot(data[i:i + SLOT])[0] for i in range(0, len(data), SLOT)]
    return [head[1] for head in heads if head is not None]


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def running(bench: Bench) -> int:
    return sum(j["status"] == "running"
               for j in json.loads(bench.qpy("check", "--json"))["jobs"])


def set_up(bench: Bench, base: str) -> None:
    admin = bench.home / "embedded"
    admin.mkdir(parents=True, mode=0o700)
    lock = bench.root / "cpus"
    (admin / "nodes").write_text(
        f"wd address=localhost cores={JOBS} memory={JOBS} cgroup=off cpu_lock={lock}-wd\n"
        f"cg address=localhost cores={JOBS} memory={JOBS} cgroup={base}/%u "
        f"cpu_lock={lock}-cg\n")
    (admin / "allowed_users").write_text(f"{pwd.getpwuid(os.getuid()).pw_name}\n")
    (admin / "distribution_rules").write_text("even\n")


def measure(bench: Bench) -> dict[str, float]:
    """Milliseconds of CPU per second of wall time, per supervisor, on each node."""
    pids = {node: supervisors(bench.home / "run" / node) for node in ("wd", "cg")}
    assert all(len(p) == JOBS for p in pids.values()), pids
    before = {node: sum(cpu_ns(p) for p in found) for node, found in pids.items()}
    start = time.monotonic()
    time.sleep(WINDOW)  # the measuring window itself
    wall = time.monotonic() - start
    after = {node: sum(cpu_ns(p) for p in found) for node, found in pids.items()}
    return {node: (after[node] - before[node]) / 1e6 / wall / JOBS for node in pids}


def remove_cgroups(user_dir: Path) -> None:
    """The jobs' cgroups go as their supervisors end, after the kill; then the bench's."""
    deadline = time.monotonic() + 60
    while any(p.is_dir() for p in user_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in [*(p for p in user_dir.iterdir() if p.is_dir()), user_dir, user_dir.parent]:
        try:
            os.rmdir(path)
        except OSError as exc:
            print(f"left {path}: {exc}", file=sys.stderr)


def main() -> None:
    if os.geteuid() != 0 or not os.access(V1, os.W_OK):
        sys.exit(f"watchdog bench: needs root and the cgroup v1 memory hierarchy at {V1}")
    base = f"{V1}/qpybench-{secrets.token_hex(3)}"
    user_dir = Path(base, pwd.getpwuid(os.getuid()).pw_name)
    user_dir.mkdir(parents=True)
    bench = Bench()
    try:
        set_up(bench, base)
        for node in ("wd", "cg"):
            for _ in range(JOBS):
                bench.qpy("sub", "-a", node, "-m", "1", "sh", "-c", JOB)
        while running(bench) < 2 * JOBS:
            time.sleep(0.1)
        time.sleep(1.0)  # past the jobs' start-up
        cost = measure(bench)
    finally:
        bench.close()
        remove_cgroups(user_dir)
    print(f"watchdog: {cost['wd']:.3f} ms CPU per second per running job "
          f"({JOBS} jobs of 3 processes, {cost['wd'] / 10:.4f}% of a core each); "
          f"baseline, the same jobs in memory cgroups: {cost['cg']:.3f} ms per second")


if __name__ == "__main__":
    main()
