"""The multiuser at scale: 1,000 nodes, 200 users, 100,000 queued jobs.

A real multiuser daemon; 200 authenticated connections play the users' masters (each
with its own key), each user with 500 queued jobs. The cluster is first filled, then every
user in turn releases one job and asks for the head of its queue, as a master does when a
job ends. Prints one line: the decision time the multiuser reports (p50, p99), the whole
request round trip, and the wall time of ``qpy status`` against it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, QPY, ROOT  # noqa: F401 - compiles the packages too

sys.path.insert(0, str(ROOT))
from qpy import paths, wire  # noqa: E402

NODES, USERS, QUEUED, CORES = 1000, 200, 100_000, 32
ROUNDS = 2000


def admin_home(root: Path) -> Path:
    home = root / "admin"
    home.mkdir(mode=0o700)
    attrs = ["big", "fast", "gpu", "ib"]
    (home / "nodes").write_text("".join(
        f"node{i:04d} address=10.0.{i // 250}.{i % 250} cores={CORES} memory=128 "
        f"attributes={attrs[i % 4]}{' pref_multicore=true' if i % 10 == 0 else ''}\n"
        for i in range(NODES)))
    users = [f"user{u:03d}" for u in range(USERS)] + [wire.whoami()]
    (home / "allowed_users").write_text("".join(f"{u}\n" for u in users))
    (home / "distribution_rules").write_text("even minimum 8\n")
    (home / "node_check_interval").write_text("off\n")  # the nodes are made up
    (home / "keys").mkdir(mode=0o700)
    for user in users:
        paths.write_private(home / "keys" / user, paths.new_key() + "\n")
    return home


def start(home: Path) -> tuple[int, tuple[str, int]]:
    env = {**os.environ, "QPY_ADMIN_HOME": str(home)}
    subprocess.run([str(BIN / "qpy-admin"), "start"], env=env, check=True, capture_output=True)
    port = int((home / "multiuser_connection_port").read_text())
    return int((home / "multiuser.pid").read_text()), ("127.0.0.1", port)


def connect(home: Path, address, user: str):
    conn = wire.connect(address, user, paths.read_key(home / "keys" / user))
    wire.tune_socket(conn, None)
    return conn


def want(jobs: list[int], k: int) -> list[dict]:
    return [{"cores": k, "mem": 2.0, "attr": None, "jobs": jobs}]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="qpy-bench-alloc-", dir=ROOT / "bench"))
    home = admin_home(root)
    pid, address = start(home)
    try:
        per_user = QUEUED // USERS
        conns, queues, running = {}, {}, {}
        for u in range(USERS):
            name = f"user{u:03d}"
            conns[name] = connect(home, address, name)
            wire.call(conns[name], {"type": "hello", "running": [], "queue_size": per_user})
            queues[name] = list(range(1, per_user + 1))
            running[name] = []
        fill, filled = 0.0, 0
        while True:  # fill the cluster: every user asks until nothing more is granted
            grants_now = 0
            for name, conn in conns.items():
                reply = wire.call(conn, {"type": "slots", "release": [], "queue_size":
                                         len(queues[name]), "want": want(queues[name][:64], 1)})
                granted = [g["job"] for g in reply["grants"]]
                fill += reply["decision_us"]
                grants_now += len(granted)
                running[name] += granted
                queues[name] = queues[name][len(granted):]
            filled += grants_now
            if not grants_now:
                break
        decisions, trips = [], []
        rng = random.Random(1)
        for i in range(ROUNDS):
            name = f"user{i % USERS:03d}"
            release = [running[name].pop(rng.randrange(len(running[name])))] \
                if running[name] else []
            msg = {"type": "slots", "release": release, "queue_size": len(queues[name]),
                   "want": want(queues[name][:64], 1 + (i % 3 == 0))}
            t = time.perf_counter()
            reply = wire.call(conns[name], msg)
            assert reply.get("ok"), reply
            trips.append((time.perf_counter() - t) * 1e3)
            decisions.append(reply["decision_us"] / 1e3)
            granted = [g["job"] for g in reply["grants"]]
            running[name] += granted
            queues[name] = queues[name][len(granted):]
        status_ms = status_wall(root, home)
    finally:
        os.kill(pid, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
    q = statistics.quantiles
    print(f"allocator: {NODES} nodes, {USERS} users, {QUEUED} queued jobs: decision p50 "
          f"{statistics.median(decisions):.3f} ms, p99 {q(decisions, n=100)[98]:.3f} ms; "
          f"request round trip p50 {statistics.median(trips):.3f} ms, p99 "
          f"{q(trips, n=100)[98]:.3f} ms ({ROUNDS} requests in a full cluster); filling it: "
          f"{fill / filled:.0f} us per granted slot ({filled} slots); qpy status "
          f"{status_ms:.0f} ms")


def status_wall(root: Path, home: Path) -> float:
    """``qpy status`` of this user, whose master uses the benchmark's multiuser."""
    qhome = root / "qpy-home"
    qhome.mkdir(mode=0o700)
    port = (home / "multiuser_connection_port").read_text()
    paths.write_private(qhome / "multiuser_connection_address", "127.0.0.1\n")
    paths.write_private(qhome / "multiuser_connection_port", port)
    paths.write_private(qhome / "multiuser_connection_conn_key",
                        (home / "keys" / wire.whoami()).read_text())
    env = {**os.environ, "QPY_HOME": str(qhome)}
    subprocess.run([QPY, "status"], env=env, check=True, capture_output=True)  # starts master
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([QPY, "status"], env=env, check=True, capture_output=True)
        samples.append((time.perf_counter() - t) * 1e3)
    subprocess.run([QPY, "finish"], env=env, capture_output=True)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
