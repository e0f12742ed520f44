"""qpy as a group uses it: real Unix accounts, the admin's multiuser, one master per user.

The cluster (see ``multiuser.py``) has three nodes on this machine:

    n1  2 cores   8 GB
    n2  4 cores  16 GB  attributes=big
    n3  2 cores   4 GB  pref_multicore

8 cores in all, shared by alice, bob and carol under ``even`` rules unless a test says
otherwise. Jobs wait for a file before they end, so tests decide when cores free up.
Tests assert outcomes, never times; every wait has a limit only against a hang.

Needs root. Skipped when not root or without useradd; when the environment variable CI is
set, that is a failure instead, so CI cannot silently skip these tests.
"""

from __future__ import annotations

import contextlib
import json
import os
from multiprocessing.connection import AuthenticationError
from pathlib import Path

import pytest
from conftest import wait_for
from multiuser import (
    GATED,
    TOTAL_CORES,
    USERS,
    WAIT,
    Cluster,
    Jobs,
    LogTail,
    expected_exit,
    jobs_of,
    skip_module_unless_available,
    started_cluster,
)
from multiuser import (
    NODES as NODES_TEXT,
)

from qpy import wire

skip_module_unless_available()

REFUSED = (AuthenticationError, EOFError, ConnectionResetError, BrokenPipeError)
NODE_CORES = {"n1": 2, "n2": 4, "n3": 2}


@pytest.fixture(scope="session")
def mu_cluster():
    with started_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(mu_cluster):
    """The shared cluster, quiet: default files, every master connected, nothing running."""
    mu_cluster.reset()
    return mu_cluster


@pytest.fixture
def work(cluster, request):
    return jobs_of(cluster, request)


# -- helpers -----------------------------------------------------------------------------------


def used(cluster: Cluster) -> dict[str, int]:
    """Cores in use per user, as the multiuser reports them."""
    return {cluster.role_of(u["user"]): u["used"] for u in cluster.status_json("alice")["users"]}


def allocations(cluster: Cluster) -> dict[str, dict[int, tuple[str, int, float]]]:
    """The multiuser's allocations per user (``qpy-admin variables``)."""
    return {cluster.role_of(name): {int(job): (v[0], v[1], float(v[2]))
                                    for job, v in data["jobs"].items()}
            for name, data in cluster.variables()["users"].items()}


def running(cluster: Cluster, user: str) -> dict[int, tuple[str, int, float]]:
    """The user's running jobs as their master records them (``qpy check --json``)."""
    return {j["id"]: (j["node"], j["n_cores"], float(j["mem"]))
            for j in cluster.jobs(user) if j["status"] == "running"}


def allocations_match_running(cluster: Cluster) -> bool:
    alloc = allocations(cluster)
    return all(alloc.get(user, {}) == running(cluster, user) for user in USERS)


def assert_no_overcommit(cluster: Cluster) -> None:
    """Per node: what the masters really run, and what the multiuser accounts, fit."""
    really = dict.fromkeys(NODE_CORES, 0)
    really_mem = dict.fromkeys(NODE_CORES, 0.0)
    for user in USERS:
        for node, cores, mem in running(cluster, user).values():
            really[node] += cores
            really_mem[node] += mem
    status = cluster.status_json("bob")
    for node in status["nodes"]:
        name = node["name"]
        assert really[name] <= node["cores"], (name, really, status)
        assert really_mem[name] <= node["mem"], (name, really_mem, status)
        assert node["used_cores"] <= node["cores"], status
        assert node["used_mem"] <= node["mem"], status
    assert sum(u["used"] for u in status["users"]) == \
        sum(n["used_cores"] for n in status["nodes"]), status


def release(jobs: Jobs, *ids: int) -> None:
    """Release the jobs and wait until their master has recorded their ends."""
    jobs.release(*ids)
    jobs.wait_finished(*ids)


def finish(jobs: Jobs, *ids: int) -> None:
    """Release the jobs and check each end was recorded as its own: done, with the exit
    status the job chose. (Tests about sharing use ``release``: what they check does not
    depend on the records.)"""
    jobs.release(*ids)
    for record in jobs.wait_finished(*ids):
        got = (record["status"], record["exit_code"], record["signal"], record["reason"])
        assert got == ("done", expected_exit(record["id"]), None, None), \
            f"{jobs.user}'s job {record['id']} on {record['node']}: {got}"


def started_probe(jobs: Jobs, **kw) -> int:
    """Submit a job and wait until it runs: the master has asked the multiuser since any
    earlier submission, so what is still queued then was refused, not just not asked for."""
    probe = jobs.sub(**kw)
    jobs.wait_started(probe)
    return probe


# -- 1. shares ---------------------------------------------------------------------------------


def rule_cases(a: str, b: str, c: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(distribution_rules text, expected (minimum, extra) per user) for 8 cores and the
    users a, b, c in their registration order (which decides who gets an odd core)."""
    return [
        ("even\n", {a: (0, 3), b: (0, 3), c: (0, 2)}),
        # 3 x 2 guaranteed, the 2 left spread one each from the first user
        ("even minimum 2\n", {a: (2, 1), b: (2, 1), c: (2, 0)}),
        # a: 2 extra; the 6 left go to all users, listed or not
        (f"explicit\n{a}=2\n", {a: (0, 4), b: (0, 2), c: (0, 2)}),
        # minimums 3, pool 5: a gets floor(2.5) = 2; the 3 left one each
        (f"explicit minimum 1\n{a}=50%\n", {a: (1, 3), b: (1, 1), c: (1, 1)}),
        # minimums a 2, b 3, c 0; pool 3: a floor(0.75) = 0, b 1; the 2 left to a and b
        (f"explicit\n{a}=2+25%\n{b}=3+1\n", {a: (2, 1), b: (3, 2), c: (0, 0)}),
        # the old 'user N' form, comments and blank lines
        (f"# shares for the test cluster\nexplicit   # per-user lines follow\n\n{a} 4\n"
         f"# {c}=8 is switched off\n{b} 1+1   # one guaranteed, one extra\n",
         {a: (0, 5), b: (1, 2), c: (0, 0)}),
    ]


def test_shares_from_every_rules_form(cluster):
    order = [u["user"] for u in cluster.status_json("alice")["users"]]
    assert sorted(order) == sorted(cluster.name(u) for u in USERS)
    # even: everyone sees the same shares, which add up to all cores
    views = [cluster.status_json(user)["users"] for user in USERS]
    for view in views:
        assert [(u["user"], u["minimum"], u["extra"]) for u in view] == \
            [(u["user"], u["minimum"], u["extra"]) for u in views[0]]
        assert sum(u["minimum"] + u["extra"] for u in view) == TOTAL_CORES
        for entry in view:
            assert set(entry) >= {"user", "used", "minimum", "extra", "queue"}
            assert (entry["used"], entry["queue"]) == (0, 0)

    for text, expected in rule_cases(*order):
        cluster.write_admin_file("distribution_rules", text)
        proc = cluster.admin("distribute")
        assert proc.stdout == "Cores distributed.\n"
        view = cluster.status_json("bob")["users"]
        got = {u["user"]: (u["minimum"], u["extra"]) for u in view}
        assert got == expected, text
        assert sum(m + e for m, e in got.values()) == TOTAL_CORES, text


# -- 2. competing users --------------------------------------------------------------------------


def test_borrowing_and_giving_back(cluster, work):
    alice, bob = work("alice"), work("bob")
    share = {user: sum(s) for user, s in cluster.shares().items()}
    assert all(m == 0 for m, _ in cluster.shares().values())  # even: nothing guaranteed
    assert share["bob"] >= 2 and share["alice"] < TOTAL_CORES

    # alice alone: she borrows every idle core, the rest of her jobs wait
    ids = alice.subs(TOTAL_CORES + 2)
    first = alice.wait_started_count(TOTAL_CORES)
    wait_for(lambda: {u["user"]: (u["used"], u["queue"])
                      for u in cluster.status_json("alice")["users"]}[cluster.name("alice")]
             == (TOTAL_CORES, 2), WAIT, "alice to use all cores with 2 jobs queued")
    waiting = [j for j in ids if j not in first]
    assert len(waiting) == 2

    # bob asks for 2 cores (below his share) while everything is taken
    b1, b2 = bob.subs(2)
    wait_for(lambda: cluster.variables()["users"][cluster.name("bob")]["queue"] == 2, WAIT,
             "bob's request to reach the multiuser")
    assert not bob.started(b1) and not bob.started(b2)

    # each core alice frees goes to bob, not to alice's own queued jobs
    release(alice, first[0])
    bob.wait_started(b1)
    assert alice.started_ids() == first
    assert used(cluster) == {"alice": TOTAL_CORES - 1, "bob": 1, "carol": 0}
    release(alice, first[1])
    bob.wait_started(b2)
    assert alice.started_ids() == first
    assert [alice.status(j) for j in waiting] == ["queue", "queue"]
    assert used(cluster) == {"alice": TOTAL_CORES - 2, "bob": 2, "carol": 0}

    # bob's queue is empty: alice may borrow again
    release(alice, first[2])
    alice.wait_started(waiting[0])
    assert used(cluster) == {"alice": TOTAL_CORES - 2, "bob": 2, "carol": 0}
    assert_no_overcommit(cluster)

    release(bob, b1, b2)
    alice.release_all()
    release(alice, *ids)


def test_user_below_share_wins_over_borrowers(cluster, work):
    """Three users: carol, waiting below her share, gets the next free core, although
    alice (above her share) and bob (at or above his) have jobs queued too."""
    alice, bob, carol = work("alice"), work("bob"), work("carol")
    share = {user: sum(s) for user, s in cluster.shares().items()}
    a = alice.subs(share["alice"] + 2)
    alice.wait_started_count(share["alice"] + 2)
    b = bob.subs(TOTAL_CORES - len(a) + 1)
    bob.wait_started(*b[:-1])
    assert used(cluster) == {"alice": len(a), "bob": TOTAL_CORES - len(a), "carol": 0}
    c = carol.subs(1)
    wait_for(lambda: cluster.variables()["users"][cluster.name("carol")]["queue"] == 1, WAIT,
             "carol's request to reach the multiuser")
    extra_a = alice.subs(1)  # alice queues more too
    release(alice, a[0])
    carol.wait_started(*c)
    assert not bob.started(b[-1]) and not alice.started(extra_a[0])
    alice.release_all()
    bob.release_all()
    carol.release_all()
    release(alice, *a, *extra_a)
    release(bob, *b)
    release(carol, *c)


def queued_at_multiuser(cluster: Cluster, user: str, size: int) -> None:
    """Wait until the multiuser knows the user has ``size`` jobs queued."""
    wait_for(lambda: cluster.variables()["users"][cluster.name(user)]["queue"] == size, WAIT,
             f"the multiuser to see {size} queued jobs of {user}")


def test_idle_minimums_are_lent_and_given_back_first(cluster, work):
    """Issue 12.6: on a 6-core cluster with 'explicit minimum 1', a 6-core job of alice's
    runs while bob and carol have nothing queued; once bob queues a job, the cores that
    free up go to him first, and then alice borrows again."""
    cluster.write_admin_file("nodes", "big address=localhost cores=6 memory=16\n")
    cluster.write_admin_file("distribution_rules", "explicit minimum 1\n")
    cluster.admin("nodes")
    cluster.admin("distribute")
    assert cluster.shares() == {"alice": (1, 1), "bob": (1, 1), "carol": (1, 1)}
    alice, bob = work("alice"), work("bob")
    big = alice.sub(cores=6)
    alice.wait_started(big)  # the minimums of bob and carol are lent
    b = bob.sub()
    queued_at_multiuser(cluster, "bob", 1)
    singles = alice.subs(6)
    queued_at_multiuser(cluster, "alice", 6)
    assert not bob.started(b)

    release(alice, big)
    bob.wait_started(b)  # given back: bob's job starts although alice asked for more
    started = wait_for(lambda: len(alice.started_ids()) == 1 + 5 and alice.started_ids(),
                       WAIT, "alice to borrow again up to the 6 cores")
    wait_for(lambda: used(cluster) == {"alice": 5, "bob": 1, "carol": 0}, WAIT,
             "the multiuser to account 5 + 1 cores")
    last = [j for j in singles if j not in started]
    assert len(last) == 1 and alice.status(last[0]) == "queue"
    release(bob, b)
    alice.wait_started(last[0])
    alice.release_all()
    release(alice, *singles)


def test_a_killed_queue_stops_holding_the_minimum(cluster, work):
    """A user who removes their queued jobs has nothing queued any more: their minimum is
    lent again at once, not held for jobs that are gone."""
    cluster.write_admin_file("nodes", "big address=localhost cores=6 memory=16\n")
    cluster.write_admin_file("distribution_rules", "explicit minimum 1\n")
    cluster.admin("nodes")
    cluster.admin("distribute")
    alice, bob = work("alice"), work("bob")
    first = alice.subs(6)
    alice.wait_started_count(6)
    b = bob.sub()
    queued_at_multiuser(cluster, "bob", 1)
    assert cluster.qpy_as("bob", "kill", str(b)).stdout == "1 job removed from the queue.\n"
    queued_at_multiuser(cluster, "bob", 0)
    seventh = alice.sub()
    release(alice, first[0])
    alice.wait_started(seventh)
    alice.release_all()
    release(alice, *first, seventh)


# -- the admin's screens ---------------------------------------------------------------------


def test_admin_status_says_which_nodes_are_up_and_which_are_not(cluster):
    text = cluster.admin("status").stdout
    assert "Up nodes (3 of 3): n1, n2, n3\n" in text and "Down nodes" not in text, text
    host, port = cluster.multiuser_address()
    allocator = f"Allocator: the cluster's multiuser at {host}:{port}\n"
    assert cluster.qpy_as("alice", "status").stdout == allocator + text  # a user's says whose
    # a node monitoring has not reached yet (an address nothing answers on) is not up
    cluster.write_admin_file("nodes", NODES_TEXT + "n4 address=192.0.2.1 cores=2 memory=4\n")
    cluster.admin("nodes")
    text = cluster.admin("status").stdout  # not measured yet, then down once ssh gives up
    assert "Up nodes (3 of 4): n1, n2, n3\n" in text, text
    assert "Not measured yet: n4 " in text or "Down nodes: n4\n" in text, text
    text = wait_for(lambda: _with(cluster.admin("status").stdout, "Down nodes: n4\n"), WAIT,
                    "monitoring to give n4 up")
    assert "Up nodes (3 of 4): n1, n2, n3\n" in text, text



def _with(text: str, line: str) -> str | None:
    """``text`` if it has ``line`` (a wait_for predicate that returns what it saw)."""
    return text if line in text else None


@contextlib.contextmanager
def throttled(pid: int):
    """Run ``pid`` on 1 ms of CPU a second (a cgroup v1 cpu quota), as on a loaded
    machine: whatever it does after a reply takes a while. Skipped where there is no
    cgroup v1 cpu controller to use."""
    base = Path("/sys/fs/cgroup/cpu")
    if not (base / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    group = base / f"qpytest_slow_{os.getpid()}_{pid}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("1000000")
        (group / "cpu.cfs_quota_us").write_text("1000")
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for line in (group / "cgroup.procs").read_text().split():
            (base / "cgroup.procs").write_text(line)  # back to the root group
        wait_for(lambda: _rmdir(group), WAIT, f"{group} to be removed")


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def test_admin_finish_returns_once_the_multiuser_has_exited(cluster):
    """The manual's upgrade is 'qpy-admin finish' then 'qpy-admin start': the second must
    find the first gone, also on a loaded machine where the old multiuser is slow to
    exit. Run in one shell, as the admin types them, reading the state of the old
    process as soon as finish returns."""
    pid = cluster.multiuser_pid()
    assert pid
    admin = str(cluster.bin / "qpy-admin")
    script = (f'{admin} finish && echo "[$(sed "s/^[^)]*) //" /proc/{pid}/stat 2>/dev/null '
              f'| cut -c1)]" && {admin} start')
    with throttled(pid):
        proc = cluster.run_as("admin", ["sh", "-c", script], check=False)
    lines = proc.stdout.split("\n")
    assert lines[0] == "Finishing qpy-multiuser.", proc.stdout
    assert lines[1] in ("[]", "[Z]"), (proc.stdout, proc.stderr)  # gone (or a zombie)
    assert proc.returncode == 0 and lines[2] == "Starting qpy-multiuser driver.", proc.stderr
    assert cluster.multiuser_pid() not in (None, pid)



def test_status_finds_a_multiuser_just_restarted(cluster):
    """A master that lost the multiuser a while ago retries every few seconds; a user
    who types ``qpy status`` right after the admin's ``qpy-admin start`` must not get
    'not reachable' because the master's next retry is still seconds away."""
    cluster.admin("finish")
    log = LogTail(cluster.qpy_home("alice") / "master.log")
    wait_for(lambda: log.text().count("cannot reach the multiuser") >= 8, WAIT,
             "alice's master to back off to its longest wait")
    cluster.start_multiuser()
    proc = cluster.qpy_as("alice", "status", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Allocator: the cluster's multiuser at "), proc.stdout

# -- 3. the queue advances past a job that does not fit -----------------------------------------


def test_small_jobs_pass_a_job_that_does_not_fit_yet(cluster, work):
    alice = work("alice")
    blocker = alice.sub(attr="n2")
    alice.wait_started(blocker)
    big = alice.sub(cores=4)  # only n2 has 4 cores, and one of them is taken
    small = alice.subs(3)
    alice.wait_started(*small)
    probe = started_probe(alice)
    assert alice.status(big) == "queue" and not alice.started(big)
    assert_no_overcommit(cluster)

    release(alice, blocker, *small, probe)
    alice.wait_started(big)
    assert alice.node(big) == "n2"
    release(alice, big)


# -- 4. memory -----------------------------------------------------------------------------------


def test_memory_places_and_limits_jobs(cluster, work):
    alice = work("alice")
    # larger than any node: refused at submission, nothing queued
    before = [j["id"] for j in cluster.jobs("alice")]
    refused = alice.sub_proc(mem=20, check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.startswith("qpy: job refused: no node can ever run it")
    assert "20 GB" in refused.stderr
    assert [j["id"] for j in cluster.jobs("alice")] == before

    # 10 GB fits only n2 (16 GB)
    first = alice.sub(mem=10)
    alice.wait_started(first)
    assert alice.node(first) == "n2"
    # a second 10 GB job would overfill n2's memory: it waits, though cores are free
    second = alice.sub(mem=10)
    probe = started_probe(alice, mem=1)
    assert alice.status(second) == "queue"
    nodes = {n["name"]: n for n in cluster.status_json("alice")["nodes"]}
    assert nodes["n2"]["used_mem"] <= 16 and nodes["n2"]["used_mem"] >= 10

    # 6 GB never lands on n3 (4 GB)
    six = alice.sub(mem=6)
    alice.wait_started(six)
    assert alice.node(six) in ("n1", "n2")
    assert_no_overcommit(cluster)

    release(alice, first, probe, six)
    alice.wait_started(second)
    assert alice.node(second) == "n2"
    release(alice, second)


# -- 5. attributes -------------------------------------------------------------------------------


def test_attributes_select_nodes(cluster, work):
    alice = work("alice")
    big = alice.sub(attr="big")
    pinned = alice.sub(attr="n3")  # a node's name counts as one of its attributes
    alice.wait_started(big, pinned)
    assert alice.node(big) == "n2"
    assert alice.node(pinned) == "n3"

    # 'not big': n1 and n3 only (3 cores left there); the 4th waits though n2 has room
    not_big = alice.subs(4, attr="not big")
    alice.wait_started(*not_big[:3])
    probe = started_probe(alice, attr="big")
    assert alice.node(probe) == "n2"
    assert alice.status(not_big[3]) == "queue"
    assert {alice.node(j) for j in not_big[:3]} <= {"n1", "n3"}

    # an invalid expression, and one no node satisfies, are refused at submission
    for expr, text in (("big and", "-a:"), ("(big", "-a:"), ("gpu", "no node has")):
        proc = alice.sub_proc(attr=expr, check=False)
        assert proc.returncode != 0 and proc.stdout == "", expr
        assert proc.stderr.startswith("qpy: ") and text in proc.stderr, (expr, proc.stderr)

    release(alice, *not_big[:3], pinned)
    alice.wait_started(not_big[3])
    assert alice.node(not_big[3]) in ("n1", "n3")
    release(alice, big, probe, not_big[3])


# -- 6. multicore preference ---------------------------------------------------------------------


def test_single_core_jobs_avoid_the_multicore_node(cluster, work):
    alice = work("alice")
    multi = alice.sub(cores=2)
    alice.wait_started(multi)
    assert alice.node(multi) == "n3"  # the preferred node first
    release(alice, multi)
    wait_for(lambda: used(cluster)["alice"] == 0, WAIT, "alice's cores to be released")

    singles = alice.subs(6)  # exactly what n1 and n2 hold
    alice.wait_started(*singles)
    nodes = [alice.node(j) for j in singles]
    assert sorted(nodes) == ["n1"] * 2 + ["n2"] * 4
    last = alice.sub()  # nothing else fits any more: now n3 is used
    alice.wait_started(last)
    assert alice.node(last) == "n3"
    assert_no_overcommit(cluster)
    release(alice, *singles, last)


# -- 7. security between real users --------------------------------------------------------------

SOCKET_PROBE = """\
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError as exc:
    print("denied", exc.errno)
    sys.exit(3)
print("connected")
"""


def test_users_cannot_act_for_each_other(cluster, work):
    alice = work("alice")
    job = alice.sub()
    alice.wait_started(job)
    alice_name, bob_name = cluster.name("alice"), cluster.name("bob")
    alice_home = cluster.qpy_home("alice")
    before = cluster.variables()
    assert before["users"][alice_name]["jobs"] == {str(job): [alice.node(job), 1, 1.0]}

    # bob cannot read alice's qpy files
    for name in ("multiuser_connection_conn_key", "master.key", "jobs.db"):
        assert (alice_home / name).exists()
        proc = cluster.run_as("bob", ["cat", str(alice_home / name)], check=False)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, name
    proc = cluster.run_as("bob", ["ls", str(alice_home)], check=False)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr

    # bob cannot reach alice's master
    assert (alice_home / "master.sock").exists()
    proc = cluster.run_as("bob", [str(cluster.bin / "python"), "-c", SOCKET_PROBE,
                                  str(alice_home / "master.sock")], check=False)
    assert (proc.returncode, proc.stdout) == (3, "denied 13\n"), proc

    # bob's own key does not let him pose as alice, nor as the admin
    bob_key = cluster.user_key("bob")
    assert bob_key != cluster.user_key("alice")
    for claimed in (alice_name, "@admin"):
        with pytest.raises(REFUSED):
            cluster.connect(claimed, bob_key)

    # over bob's own authenticated connection, nothing reaches alice's allocations
    cluster.qpy_as("bob", "finish")  # so bob's master does not take the session back
    wait_for(lambda: bob_name not in cluster.variables()["connected"], WAIT,
             "bob's master to disconnect")
    with cluster.connect(bob_name, bob_key) as conn:
        reply = wire_call(conn, {"type": "hello", "running": [], "queue_size": 0})
        assert reply["ok"] is True, reply
        reply = wire_call(conn, {"type": "slots", "release": [job], "want": [],
                                 "queue_size": 0})
        assert reply["ok"] is True and reply["grants"] == [], reply
        reply = wire_call(conn, {"type": "hello", "user": alice_name, "running": [],
                                 "queue_size": 0})
        assert reply["ok"] is False, reply
        reply = wire_call(conn, {"type": "admin", "command": "__remove_job",
                                 "args": [alice_name, str(job)]})
        assert reply["ok"] is False and "admin" in reply["error"], reply
    after = cluster.variables()
    assert after["users"][alice_name] == before["users"][alice_name]
    assert after["nodes"] == before["nodes"]
    assert alice_name in after["connected"]

    # bob cannot run admin commands: the admin key is not his to read
    pid = cluster.multiuser_pid()
    for args in (("status",), ("variables",), ("finish",), ("adduser", "mallory"),
                 ("__remove_job", alice_name, str(job))):
        proc = cluster.admin(*args, user="bob", check=False)
        assert proc.returncode != 0 and proc.stdout == "", args
        assert proc.stderr.startswith("qpy-admin: cannot reach the multiuser"), proc.stderr
        assert "Permission denied" in proc.stderr, proc.stderr
    assert cluster.multiuser_pid() == pid
    assert cluster.variables()["users"][alice_name] == before["users"][alice_name]
    assert "mallory" not in (cluster.admin_home / "allowed_users").read_text()

    assert alice.status(job) == "running"
    release(alice, job)


def wire_call(conn, msg: dict) -> dict:
    return wire.call(conn, msg, WAIT)


# -- 8. malformed admin files --------------------------------------------------------------------


NODE_KEYS = ("name", "address", "cores", "mem", "attrs", "up", "pref_multicore", "used_cores",
             "used_mem")


def comparable(status: dict) -> dict:
    """The configured and allocated part of a status, without what is measured on the
    machine (load, memory in use), which changes by itself."""
    return {"users": status["users"],
            "nodes": [{k: n[k] for k in NODE_KEYS} for n in status["nodes"]]}


def test_malformed_files_are_refused_and_the_old_configuration_kept(cluster, work):
    alice = work("alice")
    pid = cluster.multiuser_pid()
    before = comparable(cluster.status_json("alice"))

    nodes = (cluster.admin_home / "nodes").read_text()
    cluster.write_admin_file("nodes", nodes + "n4 address=localhost cores=two memory=8\n")
    proc = cluster.admin("nodes", check=False)
    assert proc.returncode == 2 and proc.stdout == ""  # bad input
    assert proc.stderr.startswith(f"qpy-admin: {cluster.admin_home / 'nodes'}:5: "), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert comparable(cluster.status_json("alice")) == before

    cluster.write_admin_file("distribution_rules",
                             f"explicit\n{cluster.name('alice')}=2\n{cluster.name('bob')}=lots\n")
    proc = cluster.admin("distribute", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith(
        f"qpy-admin: {cluster.admin_home / 'distribution_rules'}:3: "), proc.stderr
    assert comparable(cluster.status_json("alice")) == before

    # rules that cannot be met with 8 cores: refused as a whole too
    cluster.write_admin_file("distribution_rules", "even minimum 3\n")
    proc = cluster.admin("distribute", check=False)
    assert proc.returncode != 0 and "minimum" in proc.stderr, proc.stderr
    assert comparable(cluster.status_json("alice")) == before

    # the admin's exit statuses tell the kind of failure, as qpy's do
    proc = cluster.admin("removeuser", "qpytest_nosuchuser", check=False)
    assert proc.returncode == 3 and "not an allowed user" in proc.stderr, proc
    proc = cluster.admin("adduser", "no such name!", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc

    # still serving with the old nodes: a job runs on one of them
    assert cluster.multiuser_pid() == pid
    job = alice.sub(attr="n1")
    alice.wait_started(job)
    assert alice.node(job) == "n1"
    release(alice, job)

    # corrected, the files are taken
    cluster.write_admin_file("nodes", nodes + "n4 address=localhost cores=1 memory=2\n")
    assert cluster.admin("nodes").stdout == "Nodes loaded: 4.\n"
    cluster.write_admin_file("distribution_rules", "even minimum 1\n")
    assert cluster.admin("distribute").returncode == 0
    status = cluster.status_json("alice")
    assert [n["name"] for n in status["nodes"]] == ["n1", "n2", "n3", "n4"]
    assert sum(u["minimum"] + u["extra"] for u in status["users"]) == TOTAL_CORES + 1
    assert all(u["minimum"] == 1 for u in status["users"])


# -- 9. crashes and reconciliation ---------------------------------------------------------------


def test_master_crash_keeps_allocations_equal_to_running_jobs(cluster, work):
    alice, bob = work("alice"), work("bob")
    a = alice.subs(3)
    a_big = alice.sub(cores=2)
    b = bob.subs(2)
    alice.wait_started(*a, a_big)
    bob.wait_started(*b)
    wait_for(lambda: allocations_match_running(cluster), WAIT, "allocations to settle")

    # alice's master is SIGKILLed; one of her jobs ends while it is gone
    old = cluster.master_pid("alice")
    cluster.kill(old)
    wait_for(lambda: cluster.name("alice") not in cluster.variables()["connected"], WAIT,
             "the multiuser to notice alice's master is gone")
    assert set(allocations(cluster)["alice"]) == {*a, a_big}  # jobs go on: cores stay taken
    alice.release(a[0])
    cluster.qpy_as("alice", "check")  # any command starts a new master
    assert cluster.master_pid("alice") not in (None, old)
    wait_for(lambda: cluster.name("alice") in cluster.variables()["connected"], WAIT,
             "alice's new master to register")
    for job in (*a[1:], a_big):  # still running (they wait for their files): adopted
        record = cluster.job("alice", job)
        assert record["status"] == "running", \
            f"job {job} still runs but the new master shows: {record['status']}, " \
            f"{record['reason']}"
    finish(alice, a[0])  # the new master finds the end that happened without it
    wait_for(lambda: allocations_match_running(cluster), WAIT,
             "alice's allocations to equal her running jobs")
    assert set(allocations(cluster)["alice"]) == {*a[1:], a_big}
    assert set(allocations(cluster)["bob"]) == set(b)
    assert_no_overcommit(cluster)

    # the jobs it adopted are still its own: they end when released, with their status
    finish(alice, *a[1:], a_big)
    release(bob, *b)
    wait_for(lambda: sum(used(cluster).values()) == 0, WAIT, "every core to be released")


def test_multiuser_crash_keeps_allocations_equal_to_running_jobs(cluster, work):
    alice, bob = work("alice"), work("bob")
    a = alice.subs(2)
    a_big = alice.sub(cores=2)
    b = bob.subs(2)
    alice.wait_started(*a, a_big)
    bob.wait_started(*b)
    wait_for(lambda: allocations_match_running(cluster), WAIT, "allocations to settle")

    # the multiuser is SIGKILLed; a job ends and another is submitted while it is gone
    cluster.kill(cluster.multiuser_pid())
    finish(bob, b[0])  # the master records the end without the multiuser
    queued = alice.sub()
    assert alice.status(queued) == "queue"
    cluster.start_multiuser()
    names = sorted(cluster.name(u) for u in USERS)
    wait_for(lambda: sorted(cluster.variables()["connected"]) == names, WAIT,
             "every master to register with the new multiuser by itself")
    alice.wait_started(queued)
    wait_for(lambda: allocations_match_running(cluster), WAIT,
             "allocations to equal the running jobs after the multiuser restart")
    assert set(allocations(cluster)["bob"]) == {b[1]}
    assert set(allocations(cluster)["alice"]) == {*a, a_big, queued}
    assert_no_overcommit(cluster)

    # fill the cluster: no core the running jobs hold is granted again
    fill = alice.subs(TOTAL_CORES)
    wait_for(lambda: sum(used(cluster).values()) == TOTAL_CORES, WAIT, "all cores in use")
    wait_for(lambda: allocations_match_running(cluster), WAIT, "allocations to settle")
    assert_no_overcommit(cluster)
    assert sum(c for user in USERS for _, c, _ in running(cluster, user).values()) == \
        TOTAL_CORES
    assert [alice.status(j) for j in fill].count("queue") == TOTAL_CORES - 2

    alice.release_all()
    release(alice, *a, a_big, queued, *fill)
    release(bob, b[1])
    wait_for(lambda: sum(used(cluster).values()) == 0, WAIT, "every core to be released")


# -- 10. several nodes, one master ---------------------------------------------------------------


def test_jobs_on_several_nodes_keep_their_own_records(cluster, work):
    """A master runs one launcher per node, started when a node gets its first job, and
    all of them keep their jobs' records in the master's one slots file. Each job's end
    must still be recorded as its own, with its own exit status."""
    carol = work("carol")
    earlier = carol.subs(3, attr="n2")  # leaves free records in the slots file
    carol.wait_started(*earlier)
    release(carol, *earlier)
    cluster.qpy_as("carol", "restart")  # a new master: launchers start as nodes get jobs

    on_n1 = carol.sub(attr="n1")
    carol.wait_started(on_n1)
    on_n3 = carol.sub(attr="n3")  # n3's launcher starts while n1's is running a job
    carol.wait_started(on_n3)
    again_n1 = carol.sub(attr="n1")
    carol.wait_started(again_n1)
    assert [carol.node(j) for j in (on_n1, on_n3, again_n1)] == ["n1", "n3", "n1"]
    finish(carol, on_n3)
    finish(carol, on_n1, again_n1)


# -- 11. saveMessages ----------------------------------------------------------------------------


def kept_messages(cluster: Cluster) -> list[dict]:
    """The requests the multiuser kept (``qpy-admin variables``)."""
    return cluster.variables()["messages"]


def kept(cluster: Cluster, user: str, kind: str) -> list[tuple[dict, dict]]:
    """The kept requests of ``kind`` from ``user``'s master: (request, reply), parsed."""
    name = cluster.name(user)
    return [(json.loads(m["request"]), json.loads(m["reply"]))
            for m in kept_messages(cluster) if (m["user"], m["type"]) == (name, kind)]


def test_save_messages_keeps_requests_and_replies_only_while_on(cluster, work):
    """``qpy-admin saveMessages true`` keeps the users' requests and the replies (the last
    1,000, each cut to 2,000 characters of JSON) for ``variables``; off (the default) and
    after ``saveMessages false`` nothing is kept."""
    alice = work("alice")
    name = cluster.name("alice")

    # off by default: a job's slot requests are served but not kept
    assert kept_messages(cluster) == []
    release(alice, started_probe(alice))
    assert kept_messages(cluster) == []

    proc = cluster.admin("saveMessages", "true")
    assert proc.stdout == "Save messages set to true.\n"
    try:
        # a new master's hello, a slot request and a status request, with their replies
        cluster.qpy_as("alice", "restart")
        wait_for(lambda: kept(cluster, "alice", "hello"), WAIT, "alice's hello to be kept")
        request, reply = kept(cluster, "alice", "hello")[-1]
        assert request["type"] == "hello" and request["running"] == []
        assert sorted(n["name"] for n in reply["nodes"]) == sorted(NODE_CORES)

        job = started_probe(alice)
        granted = [(request, reply) for request, reply in kept(cluster, "alice", "slots")
                   if job in [g["job"] for g in reply.get("grants", [])]]
        assert len(granted) == 1, kept_messages(cluster)
        request, reply = granted[0]
        assert any(job in group["jobs"] for group in request["want"]), request
        assert [g["node"] for g in reply["grants"] if g["job"] == job] == [alice.node(job)]

        cluster.qpy_as("alice", "status")
        request, reply = kept(cluster, "alice", "status")[-1]
        assert request["type"] == "status"
        assert name in [u["user"] for u in reply["users"]]

        messages = kept_messages(cluster)
        assert all(set(m) == {"time", "user", "type", "request", "reply"} for m in messages)
        assert all(len(m["request"]) <= 2000 and len(m["reply"]) <= 2000 for m in messages)
        assert {m["user"] for m in messages} <= {cluster.name(u) for u in USERS}  # no admin
        release(alice, job)
        wait_for(lambda: not allocations(cluster)["alice"], WAIT, "alice's slot released")

        # only the last 1,000 are kept, and a long request is cut; a refusal is kept too
        bob = cluster.name("bob")
        with cluster.connect(bob, cluster.user_key("bob")) as conn:
            for _ in range(1000):
                assert wire_call(conn, {"type": "status"})["ok"] is True
            long = {"type": "slots", "release": list(range(10**6, 10**6 + 600)), "want": [],
                    "queue_size": 0}
            assert wire_call(conn, long)["ok"] is False  # no hello on this connection
        messages = kept_messages(cluster)
        assert len(messages) == 1000
        assert all((m["user"], m["type"]) == (bob, "status") for m in messages[:-1])
        last = messages[-1]
        assert (last["user"], last["type"]) == (bob, "slots")
        assert len(last["request"]) == 2000 and last["request"].endswith("...")
        assert json.loads(last["reply"]) == {"error": "register with hello first"}
    finally:
        proc = cluster.admin("saveMessages", "false")
    assert proc.stdout == "Save messages set to false.\n"

    # off again: what was kept is dropped, and nothing new is kept
    assert kept_messages(cluster) == []
    release(alice, started_probe(alice))
    cluster.qpy_as("alice", "status")
    assert kept_messages(cluster) == []


# -- priorities and qpy why between users (issue 13) -----------------------------------------


def sub_with(jobs: Jobs, *options: str) -> int:
    """A gated job of 1 core and 1 GB with more ``qpy sub`` options; its ID."""
    out = jobs.cluster.qpy_as(jobs.user, "sub", "-m", "1", *options, "sh", "-c", GATED,
                              cwd=jobs.dir).stdout
    job = int(out.split()[1])
    jobs.ids.append(job)
    return job


def test_priorities_order_a_users_own_jobs_and_never_change_fair_share(cluster, work):
    """alice borrows every core with high-priority jobs and queues more of them; bob's
    normal ones still get each core alice frees, and qpy why tells alice so, with the
    numbers. Among alice's own jobs, the high ones go first."""
    alice, bob = work("alice"), work("bob")
    share = {user: sum(s) for user, s in cluster.shares().items()}
    first = [sub_with(alice, "--priority", "high") for _ in range(TOTAL_CORES)]
    alice.wait_started(*first)
    low = sub_with(alice, "--priority", "low")
    high = sub_with(alice, "--priority", "high")
    assert [j["id"] for j in cluster.jobs("alice", "queue")] == [high, low]
    b1 = sub_with(bob)
    wait_for(lambda: cluster.variables()["users"][cluster.name("bob")]["queue"] == 1, WAIT,
             "bob's request to reach the multiuser")
    why = json.loads(cluster.qpy_as("alice", "why", "--json", str(high)).stdout)
    assert why["reason"] == "share", why
    assert why["details"]["used"] == TOTAL_CORES and why["details"]["share"] == share["alice"]
    assert why["text"] == (
        f"you use {TOTAL_CORES} cores and your share is {share['alice']} "
        f"({why['details']['minimum']} guaranteed + {why['details']['extra']} extra), while "
        f"other users wait below theirs: {cluster.name('bob')} uses 0 of {share['bob']}")
    release(alice, first[0])  # the core goes to bob, not to alice's high-priority job
    bob.wait_started(b1)
    assert not alice.started(high) and not alice.started(low)
    assert used(cluster) == {"alice": TOTAL_CORES - 1, "bob": 1, "carol": 0}
    release(bob, b1)  # nobody else waits: alice borrows again, high before low
    alice.wait_started(high)
    assert not alice.started(low)
    release(alice, first[1])
    alice.wait_started(low)
    alice.release_all()
    release(alice, *first, high, low)


def test_an_idle_report_needs_the_users_registered_master(cluster):
    """As ``slots``: an idle report on a connection that did not register with ``hello``
    (a script with the user's key, or a user the admin removed, whom any request naming
    them would otherwise make a member again) is refused."""
    bob = cluster.name("bob")
    cluster.qpy_as("bob", "finish")  # so bob's master does not take the session back
    wait_for(lambda: bob not in cluster.variables()["connected"], WAIT,
             "bob's master to disconnect")
    with cluster.connect(bob, cluster.user_key("bob")) as conn:
        reply = wire_call(conn, {"type": "idle_report", "sessions": []})
    assert reply["ok"] is False and reply["error"] == "register with hello first", reply


def test_a_freed_core_goes_to_the_users_next_job_only_while_nobody_else_waits(cluster, work):
    """Chaining (``qpy_master/scheduler.py``): while nobody else has jobs queued, a core
    that alice's job frees goes straight to her next job; once bob queues one, the
    multiuser takes that back, and the next core alice frees is bob's. Its accounts of
    the chained jobs end even (nothing used once all ended)."""
    alice, bob = work("alice"), work("bob")
    ids = alice.subs(TOTAL_CORES + 3)
    first = alice.wait_started_count(TOTAL_CORES)
    waiting = [j for j in ids if j not in first]
    release(alice, first[0])  # nobody else waits: her next job takes the core
    alice.wait_started(waiting[0])
    b = bob.subs(1)
    queued_at_multiuser(cluster, "bob", 1)
    release(alice, first[1])
    bob.wait_started(*b)
    assert [alice.status(j) for j in waiting[1:]] == ["queue", "queue"]
    release(bob, *b)
    alice.release_all()
    release(alice, *ids)
    wait_for(lambda: used(cluster) == {"alice": 0, "bob": 0, "carol": 0}, WAIT,
             "the multiuser to account every chained job's end")
    assert not any(allocations(cluster).values())


def test_a_chained_job_is_counted_only_within_what_its_slot_held(cluster, work):
    """A master says which job took an ended job's slot (``chained``); the multiuser
    believes it only for a slot the user holds, and never for more cores or memory than
    it held, whatever a user's own connection claims."""
    alice = work("alice")
    theirs = alice.sub()
    alice.wait_started(theirs)
    bob_name = cluster.name("bob")
    cluster.qpy_as("bob", "finish")  # bob speaks as his own master from here
    wait_for(lambda: bob_name not in cluster.variables()["connected"], WAIT,
             "bob's master to disconnect")

    def chained(conn, ended: int, job: int, node: str, cores: int, mem: float) -> dict:
        return wire_call(conn, {"type": "slots", "release": [], "want": [], "queue_size": 0,
                                "chained": [{"ended": ended, "job": job, "node": node,
                                             "cores": cores, "mem": mem}]})

    with cluster.connect(bob_name, cluster.user_key("bob")) as conn:
        assert wire_call(conn, {"type": "hello", "running": [], "queue_size": 0})["ok"]
        reply = wire_call(conn, {"type": "slots", "release": [], "queue_size": 1, "want": [
            {"cores": 1, "mem": 1.0, "attr": None, "jobs": [7]}]})
        node = reply["grants"][0]["node"]
        for claim in ((7, 8, node, 2, 1.0), (7, 8, node, 1, 2.0), (9, 8, node, 1, 1.0),
                      (theirs, 8, alice.node(theirs), 1, 1.0)):
            assert chained(conn, *claim)["ok"] is True
            assert cluster.variables()["users"][bob_name]["jobs"] == {"7": [node, 1, 1.0]}
        assert chained(conn, 7, 8, node, 1, 0.5)["ok"] is True  # within its slot: believed
        assert cluster.variables()["users"][bob_name]["jobs"] == {"8": [node, 1, 0.5]}
        wire_call(conn, {"type": "slots", "release": [8], "want": [], "queue_size": 0})
    release(alice, theirs)
