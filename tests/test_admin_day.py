"""The admin's daily tools on a shared installation: per-user limits, node drain, the
multiuser's log. Real Unix accounts, the admin's multiuser and the users' masters
(``multiuser.py``): nodes n1 (2 cores, 8 GB), n2 (4 cores, 16 GB, big) and n3 (2
cores, 4 GB, multicore) on this machine, shared by alice and bob.

Jobs are gated (they wait for a file), so tests decide when cores free up; every wait
has a limit only against a hang. Needs root; skipped otherwise, except under CI.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import select
import subprocess
import time

import pytest
from conftest import wait_for
from multiuser import (
    WAIT,
    Cluster,
    Jobs,
    LogTail,
    expected_exit,
    jobs_of,
    root_env,
    skip_module_unless_available,
    started_cluster,
)

skip_module_unless_available()


@pytest.fixture(scope="module")
def day_cluster():
    with started_cluster(users=("alice", "bob")) as cluster:
        yield cluster


@pytest.fixture
def cluster(day_cluster):
    """Quiet, with no limits file and no node drained."""
    day_cluster.reset()
    yield day_cluster
    (day_cluster.admin_home / "limits").unlink(missing_ok=True)
    day_cluster.admin("distribute")
    day_cluster.admin("resume", "n1", "n2", "n3", check=False)


@pytest.fixture
def work(cluster, request):
    return jobs_of(cluster, request)


def set_limits(cluster: Cluster, text: str) -> None:
    for role in ("alice", "bob"):
        text = text.replace(f"<{role}>", cluster.name(role))
    cluster.write_admin_file("limits", text)
    cluster.admin("distribute")


def held_back(cluster: Cluster, user: str) -> str:
    """The line of ``qpy check`` that names the limit holding the user's queue."""
    def line():
        lines = cluster.qpy_as(user, "check").stdout.splitlines()
        return next((x for x in lines if x.startswith("Queued jobs are held back")), None)

    return wait_for(line, WAIT, f"qpy check of {user} to name a limit")


def stays_queued(jobs: Jobs, job: int) -> None:
    """The job is still queued now that the multiuser has decided on it (the check line
    says so); nothing sleeps."""
    assert jobs.status(job) == "queue"
    assert not jobs.started(job)


# -- per-user limits -------------------------------------------------------------------------


def test_a_limit_of_running_jobs_holds_the_next_job_until_one_ends(cluster, work):
    set_limits(cluster, "# two jobs at a time for everyone\ndefault jobs=2\n")
    alice, bob = work("alice"), work("bob")
    first = alice.subs(3)
    alice.wait_started(*first[:2])
    assert held_back(cluster, "alice") == \
        "Queued jobs are held back by the limit of 2 running jobs per user (2 running)."
    stays_queued(alice, first[2])
    others = bob.subs(2)  # bob has his own two
    bob.wait_started(*others)
    alice.release(first[0])
    alice.wait_started(first[2])
    assert "held back" not in cluster.qpy_as("alice", "check").stdout
    alice.release_all()
    bob.release_all()
    alice.wait_finished(*first)


def test_why_names_the_per_user_limit_that_holds_a_job(cluster, work):
    """``qpy why`` gives the limit ``qpy check`` names, not 'nothing holds it back'."""
    set_limits(cluster, "default jobs=2\n")
    alice = work("alice")
    first = alice.subs(3)
    alice.wait_started(*first[:2])
    held_back(cluster, "alice")
    why = cluster.qpy_as("alice", "why", str(first[2]))
    assert why.stdout == ("limit: the administrator's limit of 2 running jobs per user "
                          "(2 running)\n")
    answer = json.loads(cluster.qpy_as("alice", "why", str(first[2]), "--json").stdout)
    assert (answer["reason"], answer["details"]) == (
        "limit", {"limit": "user", "reason": "limit of 2 running jobs per user (2 running)"})
    alice.release_all()
    alice.wait_finished(*first)


def test_a_limit_of_cores_lets_smaller_jobs_pass(cluster, work):
    set_limits(cluster, "default cores=none\n<alice> cores=3\n")
    alice = work("alice")
    big = alice.sub(cores=2)
    alice.wait_started(big)
    second = alice.sub(cores=2)
    assert held_back(cluster, "alice") == ("Queued jobs are held back by the limit of 3 "
                                           "cores per user (2 in use, 2 more asked).")
    small = alice.sub(cores=1)
    alice.wait_started(small)  # fits the limit: it passes the job that does not
    stays_queued(alice, second)
    data = cluster.variables()["users"][cluster.name("alice")]
    assert data["limits"] == {"jobs": None, "cores": 3, "memory": None}
    assert data["used"] == 3
    bob = work("bob")
    bob_jobs = bob.subs(2, cores=2)  # bob has no line: the default, no limit
    bob.wait_started(*bob_jobs)
    alice.release(big)
    alice.wait_started(second)
    alice.release_all()
    bob.release_all()


def test_a_memory_limit_and_raising_it_starts_the_waiting_job_at_once(cluster, work):
    set_limits(cluster, "default memory=3\n")
    alice = work("alice")
    first = alice.sub(mem=2)
    alice.wait_started(first)
    second = alice.sub(mem=2)
    assert held_back(cluster, "alice") == ("Queued jobs are held back by the limit of 3 GB "
                                           "of memory per user (2 GB in use, 2 GB more "
                                           "asked).")
    stays_queued(alice, second)
    set_limits(cluster, "default memory=4\n")  # distribute: the waiting user is woken
    alice.wait_started(second)
    alice.release_all()
    alice.wait_finished(first, second)


def test_a_malformed_limits_file_is_refused_and_the_old_limits_kept(cluster, work):
    set_limits(cluster, "default jobs=1\n")
    path = cluster.admin_home / "limits"
    for text, error in (
            ("default jobs=two\n", f"{path}:1: jobs must be a whole number or none, not 'two'"),
            ("\n<alice> cores=0\n", f"{path}:2: cores must be positive, not '0'"),
            ("<alice> gpus=1\n", f"{path}:1: unknown key 'gpus' (use jobs, cores or memory)"),
            ("<alice>\n", f"{path}:1: <alice> needs jobs=, cores= or memory="),
            ("default jobs=1\ndefault jobs=2\n", f"{path}:2: default is given twice"),
            ("<alice> jobs=1\n<alice> jobs=2\n", f"{path}:2: user <alice> is listed twice"),
            ("<alice> memory=-1\n", f"{path}:1: memory must be positive, not '-1'")):
        name = cluster.name("alice")
        cluster.write_admin_file("limits", text.replace("<alice>", name))
        proc = cluster.admin("distribute", check=False)
        assert (proc.returncode, proc.stdout) == (2, ""), (text, proc)
        assert proc.stderr == f"qpy-admin: {error.replace('<alice>', name)}\n"
    alice = work("alice")
    jobs = alice.subs(2)
    alice.wait_started(jobs[0])
    assert held_back(cluster, "alice").endswith("limit of 1 running job per user (1 running).")
    stays_queued(alice, jobs[1])
    alice.release_all()
    alice.wait_finished(*jobs)


# -- node drain -------------------------------------------------------------------------------


def status_lines(cluster: Cluster, user: str = "bob") -> list[str]:
    return cluster.qpy_as(user, "status").stdout.splitlines()


def node_row(lines: list[str], node: str) -> str:
    return next(line for line in lines if line.startswith(node + " "))


def test_drain_lets_running_jobs_finish_starts_nothing_new_and_survives_a_restart(
        cluster, work):
    alice = work("alice")
    running = alice.subs(2, attr="big")
    alice.wait_started(*running)
    assert {alice.node(j) for j in running} == {"n2"}
    out = cluster.admin("drain", "n2", "--reason", "new disk").stdout
    assert out == "Node n2 draining: no new job starts there; 2 running jobs finish.\n"
    lines = status_lines(cluster)
    assert node_row(lines, "n2").startswith("n2 (draining) ")
    assert "Drained nodes: n2" in lines
    since = next(x for x in lines if x.startswith("  n2: "))
    assert re.fullmatch(r"  n2: draining since \d{4}-\d\d-\d\d \d\d:\d\d: new disk", since)
    node = next(n for n in cluster.status_json("alice")["nodes"] if n["name"] == "n2")
    drained_at = datetime.datetime.fromisoformat(node["drain_since"].replace("Z", "+00:00"))
    assert node["drain_reason"] == "new disk" and drained_at.timestamp() <= time.time()
    assert node["state"] == "up"  # monitoring's state: drained is not down
    waiting = alice.sub(attr="big")  # only n2 is big
    elsewhere = alice.sub(attr="not big")
    alice.wait_started(elsewhere)
    assert alice.node(elsewhere) != "n2"
    alice.release(*running)  # the running jobs finish as usual
    records = alice.wait_finished(*running)
    assert [(r["status"], r["exit_code"]) for r in records] == \
        [("done", expected_exit(j)) for j in running]
    wait_for(lambda: node_row(status_lines(cluster), "n2").startswith("n2 (drained) "),
             WAIT, "n2 to be drained")
    stays_queued(alice, waiting)
    log = LogTail(cluster.admin_home / "multiuser.log")
    cluster.admin("finish")
    cluster.start_multiuser()

    def drained_again():  # once bob's master is back on the restarted multiuser
        lines = cluster.qpy_as("bob", "status", check=False).stdout.splitlines()
        return lines if any(x.startswith("n2 (drained) ") for x in lines) else None

    lines = wait_for(drained_again, WAIT, "the restarted multiuser to show n2 drained")
    assert any(x.startswith("  n2: drained since ") and x.endswith(": new disk")
               for x in lines), lines
    assert since.split(" since ")[1] in "\n".join(lines)  # the same time as before
    stays_queued(alice, waiting)
    assert cluster.admin("resume", "n2").stdout == \
        "Node n2 resumed: new jobs may start there.\n"
    alice.wait_started(waiting)
    assert alice.node(waiting) == "n2"
    assert "Drained nodes" not in "\n".join(status_lines(cluster))
    text = log.text()
    for line in ("admin command: finish", "admin command: resume 'n2'",
                 "node n2 resumed by the admin"):
        assert line in text, (line, text)
    alice.release_all()


def test_drain_and_resume_refuse_unknown_nodes_and_say_what_was_not_drained(cluster):
    proc = cluster.admin("drain", "n9", "n1", check=False)
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == "qpy-admin: no node named n9 in the nodes file\n"
    assert "Drained nodes" not in "\n".join(status_lines(cluster))  # n1 was not drained
    assert cluster.admin("drain", "n1").stdout == \
        "Node n1 drained: no new job starts there.\n"
    assert cluster.admin("resume", "n1", "n3").stdout == \
        "Node n1 resumed: new jobs may start there.\nNode n3 was not drained.\n"
    proc = cluster.admin("resume", check=False)
    assert proc.returncode == 2 and "Missing argument" in proc.stderr


# -- the multiuser's log ---------------------------------------------------------------------


def read_until(proc: subprocess.Popen, text: str) -> str:
    """What ``proc`` prints until a line holding ``text`` (a guard against a hang only)."""
    seen = b""
    deadline = time.monotonic() + WAIT
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in {seen[-2000:]!r}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the follower ended before {text!r}: {seen[-2000:]!r}"
            seen += chunk
    return seen.decode()


def test_the_log_names_grants_refusals_and_admin_commands(cluster, work):
    log = LogTail(cluster.admin_home / "multiuser.log")
    set_limits(cluster, "default jobs=1\n")
    alice = work("alice")
    jobs = alice.subs(2)
    alice.wait_started(jobs[0])
    held_back(cluster, "alice")
    name = cluster.name("alice")
    node = alice.node(jobs[0])
    wait_for(lambda: f"{name} waits" in log.text(), WAIT, "the refusal in the log")
    text = log.text()
    assert "admin command: distribute" in text
    assert f"granted {name}: job {jobs[0]} on {node} (1 core, 1 GB)" in text, text
    assert f"{name} waits: job {jobs[1]} (1 core, 1 GB): limit of 1 running job per user " \
           "(1 running)" in text, text
    whole = (cluster.admin_home / "multiuser.log").read_text().splitlines(keepends=True)
    assert cluster.admin("log", "-n", "3").stdout == "".join(whole[-3:])
    alice.release_all()
    alice.wait_finished(*jobs)


def test_the_log_is_rotated_and_log_f_follows_it(cluster):
    home = cluster.admin_home
    cluster.admin("finish")
    for old in home.glob("multiuser.log*"):  # written under the default size by other tests
        old.unlink()
    qpy_admin = str(cluster.bin / "qpy-admin")
    cluster.run_as("admin", ["/usr/bin/env", "QPY_LOG_BYTES=2048", qpy_admin, "start"])
    follower = subprocess.Popen(cluster.argv_as("admin", [qpy_admin, "log", "-n", "1", "-f"]),
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env=root_env())
    try:
        read_until(follower, "\n")  # it has shown the last line: it follows from there
        for i in range(30):  # about 150 bytes of log each: a few rotations
            cluster.admin("drain", "n1", "--reason", f"mark {i}")
        seen = read_until(follower, "mark 29")
        for i in range(30):
            assert f"admin command: drain 'mark {i}' 'n1'" in seen, (i, seen)
    finally:
        follower.kill()
        follower.wait()
    rotated = sorted(p.name for p in home.glob("multiuser.log.*"))
    assert rotated and rotated[0] == "multiuser.log.1", rotated
    assert all(p.stat().st_size <= 2048 + 512 for p in home.glob("multiuser.log*"))
    cluster.admin("finish")
    cluster.start_multiuser()
