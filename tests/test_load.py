"""Load: 20 real Unix users each submit 500 jobs at once to one multiuser.

Every user runs one small Python script (as that user) that sends its 500 ``sub`` requests
over the wire to their own master, the same request ``qpy sub`` sends: 10,000 CLI start-ups
would take longer than the jobs. All 20 start together. The jobs append their ID to a file
(``ran``) and exit, so every run is counted.

Asserted: every one of the 10,000 jobs is accepted, runs exactly once and is recorded done
with exit code 0; no request is refused and no daemon logs an error; and, in snapshots of
the multiuser's allocations taken all through the run (``qpy-admin variables`` over the
wire), nothing is overcommitted and nobody goes above their share while another user waits
below theirs.

That last check is exact, not statistical. A user B provably *waits below their share*
from one snapshot to a later one if both show B with jobs queued and fewer cores than their
share, the later one shows no allocation of B's that the first did not, and B's ``ran``
file did not grow from just before the first to just after the later one: so B got no
grant in between (a job granted and already ended would have written its line), and B's
master kept jobs queued all along. If the later snapshot shows another user A above their
share holding a job the first did not, A's last grant (which left A at least that far above
their share) came while B waited below theirs, which fair share forbids. An allocator that
ignores waiting users fails this check at once (tried: some 1,800 such grants in one run);
with a fair one, waiting spans are short, because every core that frees goes to a waiter.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
import suite_stats
from conftest import wait_for
from multiuser import Cluster, root_env, skip_module_unless_available, started_cluster

from qpy import client, wire

USERS = tuple(f"u{i:02d}" for i in range(1, 21))
PER_USER = 500
CORES = 40  # 'even': 2 cores each
NODES = f"load address=localhost cores={CORES} memory={4 * CORES}\n"
JOB = "echo $QPY_JOB_ID >> ran"
RUN_LIMIT = 900.0  # only a guard against a hang
SAMPLE_EVERY = 0.0  # back to back: each snapshot waits for the multiuser's reply

SUBMIT = r"""
import json, os, sys
from qpy import client, wire

count, command = int(sys.argv[1]), sys.argv[2]
env, cwd = dict(os.environ), os.getcwd()
conn = client.connect()  # the user's own master, started if needed
wire.tune_socket(conn, 120.0)
ids, errors = [], []
try:
    for _ in range(count):
        reply = wire.call(conn, {"type": "sub", "command": command, "cwd": cwd, "env": env,
                                 "n_cores": 1, "mem": 1, "attr": None, "copy": False,
                                 "script": None}, 120.0)
        if reply.get("ok"):
            ids.append(reply["job"])
        else:
            errors.append(reply.get("error"))
finally:
    conn.close()
print(json.dumps({"ids": ids, "errors": errors}))
"""

skip_module_unless_available()


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(users=USERS, nodes=NODES, rules="even\n") as cluster:
        yield cluster


class Sampler(threading.Thread):
    """Snapshots of ``qpy-admin variables``, each with the size of every user's ``ran``
    file just before and just after it was taken."""

    def __init__(self, cluster: Cluster, ran: dict[str, Path]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.ran = ran  # Unix name -> the file the user's jobs append to
        self.snapshots: list[tuple[dict[str, int], dict, dict[str, int]]] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        home = cluster.admin_home
        self.conn = client.connect_bundle(home, "@admin", home / "admin.key")
        wire.tune_socket(self.conn, 60.0)

    def sizes(self) -> dict[str, int]:
        found = {}
        for name, path in self.ran.items():
            try:
                found[name] = path.stat().st_size
            except FileNotFoundError:
                found[name] = 0
        return found

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                before = self.sizes()
                reply = wire.call(self.conn, {"type": "admin", "command": "variables",
                                              "args": []}, 60.0)
                assert reply.get("ok"), reply
                self.snapshots.append((before, reply["variables"], self.sizes()))
                self.stop.wait(SAMPLE_EVERY)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()


def share(user: dict) -> int:
    return user["minimum"] + user["extra"]


def overcommitted(variables: dict) -> list[str]:
    found = []
    per_node: Counter = Counter()
    for user in variables["users"].values():
        for node, cores, _ in user["jobs"].values():
            per_node[node] += cores
        if user["used"] != sum(cores for _, cores, _ in user["jobs"].values()):
            found.append(f"used {user['used']} differs from the allocations {user['jobs']}")
    for name, node in variables["nodes"].items():
        if max(node["used_cores"], per_node[name]) > node["cores"] \
                or node["used_mem"] > node["mem"] + 1e-9:
            found.append(f"node {name}: {per_node[name]} cores allocated, {node}")
    return found


def unfair(snapshots: list[tuple[dict, dict, dict]]) -> tuple[list[str], int]:
    """Grants that took a user above their share while another provably waited below
    theirs (see the module's docstring), and how many waiting spans were checked."""
    found, checked = [], 0
    since: dict[str, tuple[int, frozenset, int]] = {}  # B -> (first snapshot, jobs, ran size)
    for k, (_, variables, after) in enumerate(snapshots):
        users = variables["users"]
        for name, user in users.items():
            jobs = frozenset(user["jobs"])
            waiting = user["queue"] > 0 and user["used"] < share(user)
            span = since.get(name)
            if not waiting:
                since.pop(name, None)
            elif span is None or not jobs <= span[1] or after[name] != span[2]:
                since[name] = (k, jobs, snapshots[k][0][name])  # maybe a grant: start again
        for waiter, (first, _, _) in since.items():
            if first == k:
                continue
            checked += 1
            before = snapshots[first][1]["users"]
            for name, user in users.items():
                new = set(user["jobs"]) - set(before.get(name, {}).get("jobs", {}))
                if name != waiter and user["used"] > share(user) and new:
                    found.append(f"snapshots {first}-{k}: {name} got jobs {sorted(new)} and "
                                 f"holds {user['used']} cores (share {share(user)}) while "
                                 f"{waiter} waited with {users[waiter]['used']} (share "
                                 f"{share(users[waiter])}) and {users[waiter]['queue']} queued")
    return found, checked


def log_errors(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]


def test_twenty_users_submit_500_jobs_each_at_once(cluster):
    dirs = {u: cluster.workdir(u, "load") for u in USERS}
    sampler = Sampler(cluster, {cluster.name(u): dirs[u] / "ran" for u in USERS})
    sampler.start()
    procs = {u: subprocess.Popen(
        cluster.argv_as(u, [str(cluster.bin / "python"), "-c", SUBMIT, str(PER_USER), JOB]),
        cwd=dirs[u], env=root_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for u in USERS}
    replies = {}
    try:
        for user, proc in procs.items():
            out, err = proc.communicate(timeout=RUN_LIMIT)
            assert proc.returncode == 0, f"{user}'s submissions failed: {err.strip()}"
            replies[user] = json.loads(out)
        for user, reply in replies.items():
            assert reply["errors"] == [], f"{user}: {reply['errors'][:5]}"
            assert len(reply["ids"]) == len(set(reply["ids"])) == PER_USER, user

        def all_ran():
            counts = {u: len(_lines(dirs[u] / "ran")) for u in USERS}
            return sum(counts.values()) == len(USERS) * PER_USER and counts

        wait_for(all_ran, RUN_LIMIT, "every job to run")
        names = {cluster.name(u) for u in USERS}

        def released():
            if sampler.error is not None or not sampler.snapshots:
                return False
            users = sampler.snapshots[-1][1]["users"]
            return all(users[n]["used"] == 0 and users[n]["queue"] == 0 for n in names)

        wait_for(released, RUN_LIMIT, "every core to be released")
    finally:
        sampler.stop.set()
        sampler.join()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sampler.error is None, repr(sampler.error)

    runs, lost, problems = 0, 0, []
    for user in USERS:
        records = {j["id"]: j for j in cluster.jobs(user)}
        lines = _lines(dirs[user] / "ran")
        runs += len(lines)
        ran = Counter(int(x) for x in lines)
        for job in replies[user]["ids"]:
            record = records.get(job)
            if record is None or (record["status"], record["exit_code"], record["signal"],
                                  record["reason"]) != ("done", 0, None, None):
                lost += 1
                problems.append(f"{user}'s job {job}: {record}")
            if ran[job] != 1:
                problems.append(f"{user}'s job {job} ran {ran[job]} times")
        if set(records) != set(replies[user]["ids"]) or set(ran) != set(records):
            problems.append(f"{user}: records, runs and submissions differ")
    suite_stats.add("jobs_run", runs)
    suite_stats.add("jobs_lost", lost)
    assert lost == 0, f"{lost} jobs lost: {problems[:10]}"
    assert problems == [], problems[:10]

    snapshots = sampler.snapshots
    assert snapshots, "no snapshot of the allocations was taken"
    for i, (_, variables, _) in enumerate(snapshots):
        assert overcommitted(variables) == [], f"snapshot {i}: {overcommitted(variables)}"
        assert sorted(variables["connected"]) == sorted(cluster.name(u) for u in USERS)
        assert all(share(u) == CORES // len(USERS) for u in variables["users"].values())
    violations, _ = unfair(snapshots)
    assert violations == [], violations[:10]

    errors = log_errors(cluster.admin_home / "multiuser.log")
    for user in USERS:
        errors += [f"{user}: {e}" for e in log_errors(cluster.qpy_home(user) / "master.log")]
    assert errors == [], errors[:10]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
