"""The admin's daily tools on a shared installation: per-user limits, node drain, the
multiuser's log. Real Unix accounts, the admin's multiuser and the users' masters
(``multiuser.py``): nodes n1 (2 cores, 8 GB), n2 (4 cores, 16 GB, big) and n3 (2
cores, 4 GB, multicore) on this machine, shared by alice and bob.

Jobs are gated (they wait for a file), so tests decide when cores free up; every wait
has a limit only against a hang. Needs root; skipped otherwise, except under CI.
"""

from __future__ import annotations

import os

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, Jobs, started_cluster, unavailable

REASON = unavailable()
if REASON and not os.environ.get("CI"):
    pytest.skip(REASON, allow_module_level=True)


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
    return lambda user: Jobs(cluster, user, cluster.workdir(user, request.node.name))


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
