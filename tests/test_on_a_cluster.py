"""The users' manual's "Getting started: On a cluster", followed step by step with real
accounts: the admin admits a new user as the admin's manual says ("Adding and removing
users"), the user joins with the code, typing the manual's commands into bash, and runs
the first job.

The commands are kept below as lists that mirror the manuals; a test checks that the
lists are what the manuals say, so when the manuals change (an enrolment command, say)
this test fails until the lists, and what is checked of their output, follow.

Needs root (see ``multiuser.py``); skipped otherwise, except under CI.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import NODE, wait_for
from multiuser import WAIT, Cluster, skip_module_unless_available, started_cluster

skip_module_unless_available()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# admin.md, "Adding and removing users", as the qpy admin in their home directory; NAME is
# the new user. Step 1 (ssh to the nodes) has nothing to do: the test's nodes are this
# machine. adduser prints the one-time code that the admin tells the user in private.
ADMIN_STEPS = [
    "qpy-admin adduser NAME",  # 2. adds NAME to allowed_users and prints the code
    "qpy-admin distribute",  # 3. shares that include the new user
]
# users.md, "On a cluster": every command shown, in order; CODE is the manual's example.
EXAMPLE_CODE = "41234-K7QXM-R2HDW-9TFPA-C4NZE"
USER_STEPS = [f"qpy join {EXAMPLE_CODE}", "qpy sub hostname", "qpy status"]
# ... and the steps for a user handed the three files instead of a code.
HANDED_STEPS = ["mkdir -p ~/.qpy && chmod 700 ~/.qpy", "qpy restart"]
CODE = re.compile(r"qpy join (\S+)")


def section(name: str, heading: str) -> str:
    text = open(os.path.join(ROOT, "manual", name)).read()
    start = text.index(f"\n{heading}\n")
    level = heading.split()[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(heading) + 2:])
    return text[start:start + len(heading) + 2 + end.start()] if end else text[start:]


def commands(text: str) -> list[str]:
    """The ``$ `` lines of the code blocks."""
    lines = (line.strip() for line in text.splitlines())
    return [line[2:] for line in lines if line.startswith("$ ")]


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(users=("alice",)) as made:
        yield made


def test_the_steps_are_the_manuals():
    on_a_cluster = section("users.md", "### On a cluster")
    assert commands(on_a_cluster) == USER_STEPS
    for step in HANDED_STEPS:
        assert f"`{step}`" in on_a_cluster, step
    admitting = section("admin.md", "## Adding and removing users")
    assert "`qpy-admin adduser NAME`" in admitting
    assert "`qpy join CODE`" in admitting
    assert "`qpy-admin distribute`" in admitting


def admit(cluster: Cluster, role: str) -> str:
    """The admin's steps for a new account; the enrolment code that adduser printed."""
    name = cluster.name(role)
    code = ""
    for step in ADMIN_STEPS:
        out = cluster.run_as("admin", ["bash", "-c", step.replace("NAME", name)]).stdout
        if step.startswith("qpy-admin adduser"):
            found = CODE.search(out)
            assert found, out
            code = found.group(1)
    return code


def run_steps(cluster: Cluster, role: str, steps: list[str]) -> list[str]:
    """Each step typed into bash as the user, in their home; their outputs."""
    outputs = []
    for step in steps:
        proc = cluster.run_as(role, ["bash", "-c", step])
        assert proc.stderr == "", (step, proc.stderr)
        outputs.append(proc.stdout)
    return outputs


def check_first_job(cluster: Cluster, role: str, outputs: list[str], job: int) -> None:
    """What the manual shows of each step, and the job run on one of the cluster's nodes."""
    home = cluster.account(role).home
    joined, received, status = outputs
    host, port = cluster.multiuser_address()
    address = f"{host}:{port}"
    assert joined.splitlines()[0] == (f"Joined the cluster's multiuser at {address}: "
                                      f"your key is in {home}/.qpy (mode 0600)."), joined
    assert received == f"Job {job} received.\n"
    assert status.splitlines()[0] == f"Allocator: the cluster's multiuser at {address}"
    wait_for(lambda: cluster.job(role, job)["status"] == "done", WAIT,
             f"{role}'s first job on the cluster")
    record = cluster.job(role, job)
    assert (record["node"] in {"n1", "n2", "n3"}, record["exit_code"]) == (True, 0), record
    assert (home / f"job_{job}.out").read_text() == os.uname().nodename + "\n"
    qpy_home = home / ".qpy"
    assert qpy_home.stat().st_mode & 0o777 == 0o700
    for path in qpy_home.glob("multiuser_connection_*"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert cluster.master_pid(role)
    users = {u["user"] for u in cluster.status_json("alice")["users"]}
    assert cluster.name(role) in users  # the cluster's multiuser knows the user


def user_steps(code: str) -> list[str]:
    return [step.replace(EXAMPLE_CODE, code) for step in USER_STEPS]


def test_a_new_user_follows_the_manual(cluster):
    cluster.new_account("dave")
    code = admit(cluster, "dave")
    outputs = run_steps(cluster, "dave", user_steps(code))
    assert outputs[0].count("\n") == 1, outputs[0]  # no master to restart yet
    check_first_job(cluster, "dave", outputs, 1)


def test_a_user_who_ran_qpy_on_their_own_before_joins_without_a_restart(cluster):
    """``qpy join`` restarts a running master on the cluster; the job it ran on its
    own stays in its records."""
    cluster.new_account("erin")
    before = cluster.run_as("erin", ["bash", "-c", "qpy sub true"]).stdout
    assert before == "Job 1 received.\n"
    wait_for(lambda: cluster.job("erin", 1)["status"] == "done", WAIT, "erin's own job")
    assert cluster.job("erin", 1)["node"] == NODE  # this machine on its own
    old_master = cluster.master_pid("erin")
    code = admit(cluster, "erin")
    outputs = run_steps(cluster, "erin", user_steps(code))
    assert cluster.master_pid("erin") != old_master
    assert "qpy-master started." in outputs[0], outputs[0]
    check_first_job(cluster, "erin", outputs, 2)
    assert cluster.job("erin", 1)["node"] == NODE
