"""What the benchmarks share: a private qpy home with real daemons, torn down by PID."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
QPY = str(BIN / "qpy")
ROOT = Path(__file__).resolve().parent.parent


def compile_packages() -> None:
    """Byte-compile qpy as ``pip install`` does, even where PYTHONDONTWRITEBYTECODE is set
    (an editable checkout would otherwise compile every module on every CLI start)."""
    import compileall

    for package in ("qpy", "qpy_master", "qpy_multiuser"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


compile_packages()


def mark(label: str) -> None:
    """A benchmark's own hop in the trace, when there is one (``QPY_TRACE``: the same
    clock and format as qpy/trace.py)."""
    path = os.environ.get("QPY_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.monotonic_ns()} {os.getpid()} {label}\n")


def live_jobs(db) -> int:
    """Jobs of a bench's store not ended yet (sqlite3 connection), from the store's index
    of live jobs: counting the done ones read the whole table 200 times a second, which
    took a tenth of a core from the jobs being measured."""
    return db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queue', 'running')"
                      ).fetchone()[0]


def hops(path: str, first: str, last: str, sep: str = "; ") -> str:
    """Median milliseconds of each hop of a trace, in the order they happen, from each
    ``first`` mark to the next ``last`` (the first time each hop is hit). A time written
    ``R`` and microseconds is the wall clock (bash's EPOCHREALTIME), turned into the
    monotonic one."""
    offset = time.time_ns() - time.monotonic_ns()
    marks = []
    for line in open(path).read().splitlines():
        t, _, label = line.split(" ", 2)
        marks.append((int(t[1:]) * 1000 - offset if t.startswith("R") else int(t), label))
    runs, current = [], None
    for t, label in sorted(marks):
        if label == first:
            current = [(t, label)]
        elif current is not None and label not in {seen for _, seen in current}:
            current.append((t, label))
            if label == last:
                runs.append(current)
                current = None
    steps: dict[str, list[float]] = {}
    for run in runs:
        for (t0, a), (t1, b) in zip(run, run[1:], strict=False):
            steps.setdefault(f"{a} -> {b}", []).append((t1 - t0) / 1e6)
    total = statistics.median((run[-1][0] - run[0][0]) / 1e6 for run in runs)
    return sep.join(f"{name} {statistics.median(v):.3f}" for name, v in steps.items()
                    if len(v) >= len(runs) // 2) + f"{sep}total {total:.2f} ms ({len(runs)} runs)"


def install_note() -> str:
    """Said beside start-up figures when qpy comes through an editable install's import
    hook, which costs every command ~16 ms here before qpy runs (README: compat mode)."""
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    hooks = list((site / "site-packages").glob("__editable___qpy*_finder.py"))
    return "; NOTE: qpy is an editable install with an import hook (figures include it)" \
        if hooks else ""


def nodes_option(argv: list[str]) -> int:
    """``--nodes N``: run the jobs on N network-namespace nodes over ssh (root only)."""
    if "--nodes" not in argv:
        return 0
    index = argv.index("--nodes")
    count = int(argv[index + 1])
    del argv[index:index + 2]
    return count


class Bench:
    """A temporary QPY_HOME and work directory; ``close`` ends the daemons it started.

    With ``nodes``, the embedded multiuser's nodes are that many network-namespace nodes
    with their own sshd (tests/netns_nodes.py, as root), reached over real OpenSSH.
    """

    def __init__(self, nodes: int = 0) -> None:
        # File creation on this sandbox's disk swings from ~20 us to over 1 ms depending on
        # the directory and recent activity, and every job creates two output files; so the
        # runs happen beside the checkout (override with QPY_BENCH_DIR), and throughput.py
        # prints the creation cost it saw.
        base = os.environ.get("QPY_BENCH_DIR") or str(ROOT / "bench")
        self.root = Path(tempfile.mkdtemp(prefix="qpy-bench-", dir=base))
        self.home = self.root / "home"
        self.work = self.root / "work"
        self.work.mkdir()
        self.env = {**os.environ, "QPY_HOME": str(self.home)}
        self.cluster = None
        self.node_cores = cores()
        if nodes:
            self._start_nodes(nodes)

    def _start_nodes(self, n: int) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        import netns_nodes

        self.cluster = netns_nodes.Cluster(n, user="root", home_config=True)
        self.cluster.start()
        admin = self.home / "embedded"
        admin.mkdir(parents=True, mode=0o700)
        (admin / "nodes").write_text("".join(
            f"{name} cores={self.node_cores} memory=8\n" for name in self.cluster.names))
        (admin / "allowed_users").write_text(f"{pwd.getpwuid(os.getuid()).pw_name}\n")
        (admin / "distribution_rules").write_text("even\n")
        (admin / "node_check_interval").write_text("5\n")

    def qpy(self, *args: str) -> str:
        return subprocess.run([QPY, *args], cwd=self.work, env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def close(self) -> None:
        subprocess.run([QPY, "kill", "all"], cwd=self.work, env=self.env, capture_output=True)
        subprocess.run([QPY, "finish"], cwd=self.work, env=self.env, capture_output=True)
        for pid_file in (self.home / "master.pid", self.home / "embedded" / "multiuser.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        if self.cluster is not None:
            self.cluster.teardown()
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_nodes_up(self) -> None:
        """Until the embedded multiuser has seen every node (its first samples)."""
        import json

        while True:
            nodes = json.loads(self.qpy("status", "--json"))["nodes"]
            if all(n["state"] == "up" for n in nodes):
                return
            time.sleep(0.05)


def timed(argv: list[str], runs: int, expect_failure: bool = False, **kwargs) -> float:
    """Median wall time of running ``argv`` in ms (it must succeed, or with
    ``expect_failure`` fail: e.g. killing a job that does not exist)."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, **kwargs)
        samples.append((time.perf_counter() - t) * 1000)
        if (proc.returncode != 0) != expect_failure:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr!r}")
    return statistics.median(samples)


def cores() -> int:
    return len(os.sched_getaffinity(0))


def create_cost(directory: Path, n: int = 200) -> float:
    """Microseconds to create one empty file in ``directory`` right now."""
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(directory / f".probe{i}", os.O_WRONLY | os.O_CREAT, 0o644))
    cost = (time.perf_counter() - t) / n * 1e6
    for i in range(n):
        os.unlink(directory / f".probe{i}")
    return cost


def spawn_rate(n: int) -> float:
    """How many ``sh -c true`` Python spawns and waits for per second here, now: the
    baseline of the throughput benchmarks."""
    t = time.perf_counter()
    for _ in range(n):
        subprocess.Popen(["/bin/sh", "-c", "true"]).wait()
    return n / (time.perf_counter() - t)
