"""Soak run: about 20 minutes of random faults while jobs come and go (as root).

    .venv/bin/python bench/soak_faults.py [--minutes 20] [--faults 1000] [--seed N]

The embedded multiuser runs one local node (``here``) and three network-namespace nodes
with their own sshd (tests/netns_nodes.py). Jobs are submitted all the time, some killed,
some with ``--requeue``; meanwhile, about every ``minutes * 60 / faults`` seconds, one
random fault is injected:

* ``master``: SIGKILL of the user's master (the next ``qpy`` command starts a new one);
* ``multiuser``: SIGKILL of the embedded multiuser (the master starts a new one);
* ``launcher``: SIGKILL of one launcher, local or on a node (its jobs go on);
* ``sshd``: SIGKILL of every sshd process of a node, listener and sessions, restarted
  0.2 to 8 s later;
* ``link``: a node's network cut for 1 to 30 s (packets dropped, nothing refused).

Jobs on the namespace nodes use ``--requeue`` pinned to their node (``-a nodeN``), so a
node declared down queues them again rather than losing them, and a copy can only run
where its first run was: the case where a node that comes back must tell the truth. Jobs
on ``here`` (never down) are plain or ``--requeue``.

Each run writes ``start`` and ``end`` lines to its own file, so the end compares the
records with what really ran. One line sums it up; the exit status is 1 if a job was
lost (missing, stuck, or recorded ``lost``), ran to its end twice (or, without
``--requeue``, started twice), or has a record that disagrees with its run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from common import QPY, Bench

NODES = ("node1", "node2", "node3")
LIVE = 16  # jobs kept queued or running
FINISHED = ("done", "killed", "undone", "lost")
JOB = ('echo "start $QPY_NODE" >> {ran}; sleep {secs}; echo "end $QPY_NODE" >> {ran}; '
       'exit $((10 + QPY_JOB_ID % 100))')


def option(argv: list[str], name: str, default: float) -> float:
    if name in argv:
        return float(argv[argv.index(name) + 1])
    return default


def pid_of(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def jobs_of(text: str) -> list[dict]:
    """The jobs of ``qpy check --json`` (one object: version and jobs; nothing if none)."""
    return json.loads(text)["jobs"] if text.strip() else []


def reads_a_pipe(pid: int) -> bool:
    """A launcher reads its ops from a pipe; a supervisor (even one orphaned by its
    launcher's death, which must not be taken for a launcher) has /dev/null there."""
    try:
        return os.readlink(f"/proc/{pid}/fd/0").startswith("pipe:")
    except OSError:
        return False


class Soak:
    """The cluster, the jobs submitted, and the faults injected."""

    def __init__(self, bench: Bench, rng: random.Random) -> None:
        self.bench, self.rng = bench, rng
        self.cluster = bench.cluster
        self.env = bench.env
        self.lock = threading.Lock()
        self.accepted: dict[int, dict] = {}  # job ID -> {tag, requeue}
        self.live: set[int] = set()
        self.faults: Counter[str] = Counter()
        self.cut: set[str] = set()
        self.sshd_down: set[str] = set()
        self.stop = threading.Event()
        self.due: list[tuple[float, object, str]] = []
        self.stale_locks = 0
        self.tags = 0

    def qpy(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        began = time.monotonic()
        proc = subprocess.run([QPY, *args], cwd=self.bench.work, env=self.env,
                              timeout=timeout, capture_output=True, text=True)
        if os.environ.get("SOAK_DEBUG") and time.monotonic() - began > 1:
            print(f"soak: qpy {args[0]} took {time.monotonic() - began:.1f} s "
                  f"({proc.returncode}: {proc.stderr.strip()[:200]})", file=sys.stderr)
        return proc

    # -- jobs ------------------------------------------------------------------------------

    def submit(self) -> None:
        self.tags += 1
        tag = f"r{self.tags}"
        node = self.rng.choice(("here", "here", *NODES))
        requeue = node != "here" or self.rng.random() < 0.5
        secs = f"{self.rng.uniform(0.1, 4):.1f}"
        args = ["sub", "-m", "0.5", "-a", node] + (["--requeue"] if requeue else [])
        proc = self.qpy(*args, "sh", "-c", JOB.format(ran=f"ran_{tag}", secs=secs))
        if proc.returncode == 0:
            job = int(proc.stdout.split()[1])
            with self.lock:
                self.accepted[job] = {"tag": tag, "requeue": requeue}
                self.live.add(job)

    def jobs_loop(self) -> None:
        """Keep LIVE jobs in flight, killing one now and then."""
        while not self.stop.is_set():
            try:
                self._refresh_live()
                if len(self.live) < LIVE:
                    self.submit()
                elif self.rng.random() < 0.05:
                    self.qpy("kill", str(self.rng.choice(sorted(self.live))))
                else:
                    self.stop.wait(0.2)
            except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as exc:
                print(f"soak: jobs loop: {exc}", file=sys.stderr)

    def _refresh_live(self) -> None:
        proc = self.qpy("check", "--json", "queue", "running")
        if proc.returncode in (0, 3):  # 3: none
            with self.lock:
                self.live = {j["id"] for j in jobs_of(proc.stdout)
                             if j["id"] in self.accepted}

    # -- faults ----------------------------------------------------------------------------

    def inject(self) -> str | None:
        """One random fault; its kind, or None if there was nothing to hit."""
        kind = self.rng.choices(("master", "multiuser", "launcher", "sshd", "link"),
                                (20, 15, 25, 20, 20))[0]
        hit = getattr(self, f"_{kind}")()
        if hit:
            self.faults[kind] += 1
            return kind
        return None

    def _sigkill(self, pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def _master(self) -> bool:
        return self._sigkill(pid_of(self.bench.home / "master.pid"))

    def _multiuser(self) -> bool:
        return self._sigkill(pid_of(self.bench.home / "embedded" / "multiuser.pid"))

    def _launcher(self) -> bool:
        mark = str(self.bench.home / "run").encode()
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        ours = {p for p in pids if mark in cmdline(p)}
        launchers = sorted(p for p in ours if reads_a_pipe(p))  # supervisors read /dev/null
        return bool(launchers) and self._sigkill(self.rng.choice(launchers))

    def _sshd(self) -> bool:
        choices = [n for n in NODES if n not in self.sshd_down]
        if not choices:
            return False
        node = self.rng.choice(choices)
        pids = [p for p in self.cluster.node_pids(node)
                if Path(f"/proc/{p}/comm").exists()
                and Path(f"/proc/{p}/comm").read_text().strip() == "sshd"]
        for pid in pids:
            self._sigkill(pid)
        listener = self.cluster.node(node)
        if listener.sshd is not None:  # reaped here, so that a restart starts a new one
            listener.sshd.wait(timeout=30)
            listener.sshd = None
        self.sshd_down.add(node)
        self._later(self.rng.uniform(0.2, 8), self._restart_sshd, node)
        return True

    def _restart_sshd(self, node: str) -> None:
        if node in self.cut:  # it could not be seen listening: again once the link is back
            self._later(1.0, self._restart_sshd, node)
            return
        self.cluster.start_sshd(node)
        self.sshd_down.discard(node)

    def _link(self) -> bool:
        choices = [n for n in NODES if n not in self.cut]
        if not choices:
            return False
        node = self.rng.choice(choices)
        self.cluster.cut_link(node)
        self.cut.add(node)
        self._later(self.rng.uniform(1, 30), self._restore_link, node)
        return True

    def _restore_link(self, node: str) -> None:
        if node in self.cut:
            self.cluster.restore_link(node)
            self.cut.discard(node)

    def _later(self, delay: float, action, node: str) -> None:
        """Undo a fault later, from the main thread (an sshd started from a short-lived
        thread would die with it: the harness ties it to its parent thread)."""
        self.due.append((time.monotonic() + delay, action, node))

    def undo_due(self) -> None:
        now = time.monotonic()
        due, self.due = [d for d in self.due if d[0] <= now], [d for d in self.due if d[0] > now]
        for _, action, node in due:
            action(node)

    def unblock_logins(self) -> None:
        """Root's login shell here runs ``pyenv init``, whose rehash lock, left behind
        when a rehash dies with its session, stalls every later ssh session for a minute
        (no qpy file): an artefact of this machine, removed when it is over a minute old."""
        lock = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"
        try:
            if time.time() - lock.stat().st_mtime > 60:
                lock.unlink()
                self.stale_locks += 1
        except OSError:
            pass

    def heal(self) -> None:
        """Every link back, every sshd listening."""
        with self.lock:
            self.due = []
            for node in list(self.cut):
                self._restore_link(node)
            for node in list(self.sshd_down):
                self._restart_sshd(node)

    # -- the verdict -----------------------------------------------------------------------

    def settle(self, limit: float) -> list[dict]:
        """The records once no accepted job is queued or running (or the limit passed)."""
        deadline = time.monotonic() + limit
        while True:
            self.unblock_logins()
            proc = self.qpy("check", "--json", "all")
            if proc.returncode == 0:
                records = jobs_of(proc.stdout)
                live = [r for r in records if r["status"] not in FINISHED
                        and r["id"] in self.accepted]
                if not live or time.monotonic() > deadline:
                    return records
            time.sleep(2)

    def verdict(self, records: list[dict]) -> tuple[Counter, list[str]]:
        by_id = {r["id"]: r for r in records}
        counts: Counter[str] = Counter()
        bad: list[str] = []
        for job, info in sorted(self.accepted.items()):
            path = self.bench.work / f"ran_{info['tag']}"
            lines = path.read_text().split("\n") if path.exists() else []
            starts = [ln for ln in lines if ln.startswith("start")]
            ends = [ln for ln in lines if ln.startswith("end")]
            counts["run"] += bool(starts)
            problem = judge(by_id.get(job), starts, ends, info["requeue"], job)
            if problem:
                kind, text = problem
                counts[kind] += 1
                bad.append(f"job {job} ({info}): {text}; runs {lines}; record "
                           f"{by_id.get(job)}")
        return counts, bad


def judge(record: dict | None, starts: list, ends: list, requeue: bool,
          job: int) -> tuple[str, str] | None:
    """(kind, why) if the job's record and its runs disagree, else None."""
    if record is None:
        return "lost", "accepted but not recorded"
    status = record["status"]
    if status not in FINISHED:
        return "lost", f"still {status} at the end"
    if status == "lost":
        return "lost", "recorded lost"
    if len(ends) > 1 or (not requeue and len(starts) > 1):
        return "twice", "ran twice"
    if status == "done" and (not ends or record["exit_code"] != 10 + job % 100):
        return "wrong", "done without the end of its run, or with another exit code"
    if status == "undone" and starts:
        return "wrong", "undone but it ran"
    if ends and status == "killed" and record["exit_code"] not in (None, 10 + job % 100):
        return "wrong", "killed with another exit code"
    return None


def main() -> None:
    minutes = option(sys.argv, "--minutes", 20.0)
    target = int(option(sys.argv, "--faults", 1000))
    seed = int(option(sys.argv, "--seed", random.randrange(1 << 30)))
    rng = random.Random(seed)
    bench = Bench(len(NODES))
    soak = Soak(bench, rng)
    began = time.monotonic()
    try:
        admin = bench.home / "embedded"
        with open(admin / "nodes", "a") as f:
            f.write("here address=localhost cores=2 memory=4\n")
        (admin / "node_check_interval").write_text("1\n")
        bench.qpy("status")  # starts the daemons
        bench.wait_nodes_up()
        worker = threading.Thread(target=soak.jobs_loop, daemon=True)
        worker.start()
        end = began + minutes * 60
        while time.monotonic() < end:
            with soak.lock:
                soak.undo_due()
                soak.unblock_logins()
                soak.inject()
            # faults still to inject, aiming 5% past the target: the random spacing
            # would otherwise end the run a few faults short of it
            left = max(1, round(target * 1.05) - sum(soak.faults.values()))
            time.sleep(rng.uniform(0.2, 1.8) * max(0.0, end - time.monotonic()) / left)
        soak.stop.set()
        worker.join(timeout=300)
        soak.heal()
        records = soak.settle(900)
        counts, bad = soak.verdict(records)
        if bad and os.environ.get("SOAK_KEEP"):  # what the daemons said, for the post-mortem
            keep = Path(os.environ["SOAK_KEEP"])
            keep.mkdir(parents=True, exist_ok=True)
            (keep / "status.txt").write_text(soak.qpy("status").stdout)
            for log in (bench.home / "master.log", bench.home / "embedded" / "multiuser.log"):
                if log.exists():
                    (keep / log.name).write_bytes(log.read_bytes())
    finally:
        soak.heal()
        bench.close()
    for line in bad:
        print(line, file=sys.stderr)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(soak.faults.items()))
    print(f"soak (seed {seed}): {sum(soak.faults.values())} faults ({kinds}) in "
          f"{(time.monotonic() - began) / 60:.1f} min; {len(soak.accepted)} jobs accepted, "
          f"{counts['run']} run, lost {counts['lost']}, run twice {counts['twice']}, "
          f"records wrong {counts['wrong']} (stale pyenv login locks removed: "
          f"{soak.stale_locks})")
    sys.exit(1 if counts["lost"] or counts["twice"] or counts["wrong"] else 0)


if __name__ == "__main__":
    main()
