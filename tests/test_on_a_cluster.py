"""The users' manual's "Getting started: On a cluster", followed step by step with real
accounts: the admin admits a new user as the admin's manual says ("Adding and removing
users"), the user installs the three files with the manual's commands, typed into bash,
and runs the first job.

The commands are kept below as lists that mirror the manuals; a test checks that the
lists are what the manuals say, so when the manuals change (an enrolment command, say)
this test fails until the lists, and what is checked of their output, follow.

Needs root (see ``multiuser.py``); skipped otherwise, except under CI.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, run_root, started_cluster, unavailable

REASON = unavailable()
if REASON and not os.environ.get("CI"):
    pytest.skip(REASON, allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# admin.md, "Adding and removing users", as the qpy admin in their home directory; NAME is
# the new user. Step 1 (ssh to the nodes) has nothing to do: the test's nodes are this
# machine. Between adduser and distribute the admin gives the user the files (step 3).
ADMIN_STEPS = [
    "echo NAME >> ~/.qpy-multiuser/allowed_users",  # 2. add the name to allowed_users
    "qpy-admin adduser NAME",  # 3. issue the key bundle (qpy-bundle-NAME/)
    "qpy-admin distribute",  # 4. shares that include the new user
]
# users.md, "On a cluster": every command shown, in order.
USER_STEPS = [
    "mkdir -p ~/.qpy && chmod 700 ~/.qpy",
    "cp multiuser_connection_* ~/.qpy/",
    "chmod 600 ~/.qpy/multiuser_connection_*",
    "qpy sub hostname",
    "qpy check",
]
# ... and the step for a user who had run qpy on this machine on its own before.
RESTART = "qpy restart"


def section(name: str, heading: str) -> str:
    text = open(os.path.join(ROOT, "manual", name)).read()
    start = text.index(f"\n{heading}\n")
    level = heading.split()[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(heading) + 2:])
    return text[start:start + len(heading) + 2 + end.start()] if end else text[start:]


def commands(text: str) -> list[str]:
    """The ``$ `` lines of the code blocks."""
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(users=("alice",)) as made:
        yield made


def test_the_steps_are_the_manuals():
    on_a_cluster = section("users.md", "### On a cluster")
    assert commands(on_a_cluster) == USER_STEPS
    assert f"`{RESTART}`" in on_a_cluster
    admitting = section("admin.md", "## Adding and removing users")
    assert "Add the user's name to `allowed_users`" in admitting
    assert "`qpy-admin adduser NAME`" in admitting
    assert "`qpy-admin distribute`" in admitting


def admit(cluster: Cluster, role: str) -> None:
    """The admin's steps for a new account, and the hand-over of the files: root puts
    them into the user's home, readable by the user only, as a private hand-over would."""
    name = cluster.name(role)
    for step in ADMIN_STEPS:
        cluster.run_as("admin", ["bash", "-c", step.replace("NAME", name)])
        if step.startswith("qpy-admin adduser"):
            bundle = cluster.admin_account.home / f"qpy-bundle-{name}"
            account = cluster.account(role)
            files = sorted(str(p) for p in bundle.glob("multiuser_connection_*"))
            assert len(files) == 3, files
            run_root("install", "-o", name, "-g", str(account.gid), "-m", "600", *files,
                     str(account.home))


def run_steps(cluster: Cluster, role: str, steps: list[str]) -> list[str]:
    """Each step typed into bash as the user, in their home; their outputs. ``qpy check``
    is typed once the job has run, as a person would look a moment later."""
    outputs = []
    for step in steps:
        if step == "qpy check":
            wait_for(lambda: [j["status"] for j in cluster.jobs(role)][-1:] == ["done"],
                     WAIT, f"{role}'s first job to run")
        proc = cluster.run_as(role, ["bash", "-c", step])
        assert proc.stderr == "", (step, proc.stderr)
        outputs.append(proc.stdout)
    return outputs


def check_first_job(cluster: Cluster, role: str, outputs: list[str], job: int) -> None:
    home = cluster.account(role).home
    assert outputs[USER_STEPS.index("qpy sub hostname")] == f"Job {job} received.\n"
    line = outputs[USER_STEPS.index("qpy check")].splitlines()[-1]
    found = re.fullmatch(rf"{job} \(done\):hostname \(on (n[123]); wd: {home}\)", line)
    assert found, line  # on one of the cluster's nodes, not on this machine on its own
    record = cluster.job(role, job)
    assert (record["node"], record["exit_code"]) == (found.group(1), 0)
    assert (home / f"job_{job}.out").read_text() == os.uname().nodename + "\n"
    qpy_home = home / ".qpy"
    assert qpy_home.stat().st_mode & 0o777 == 0o700
    for path in qpy_home.glob("multiuser_connection_*"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert cluster.master_pid(role)  # started by the first qpy command
    users = {u["user"] for u in cluster.status_json("alice")["users"]}
    assert cluster.name(role) in users  # the cluster's multiuser knows the user


def test_a_new_user_follows_the_manual(cluster):
    cluster.new_account("dave")
    admit(cluster, "dave")
    outputs = run_steps(cluster, "dave", USER_STEPS)
    check_first_job(cluster, "dave", outputs, 1)


def test_a_user_who_ran_qpy_on_their_own_before_restarts_once(cluster):
    cluster.new_account("erin")
    before = cluster.run_as("erin", ["bash", "-c", "qpy sub true"]).stdout
    assert before == "Job 1 received.\n"
    wait_for(lambda: cluster.job("erin", 1)["status"] == "done", WAIT, "erin's own job")
    assert cluster.job("erin", 1)["node"] == "localhost"  # this machine on its own
    admit(cluster, "erin")
    steps = [*USER_STEPS[:3], RESTART, *USER_STEPS[3:]]
    outputs = run_steps(cluster, "erin", steps)
    del outputs[3]  # qpy restart's reply
    check_first_job(cluster, "erin", outputs, 2)
