"""A new user joins a cluster: from qpy alone on the login host to the cluster's
multiuser, and the admin's enrolment codes (issue 11 item 7, issue 12 item 13).

Real Unix accounts (``multiuser.py``): each test makes a newcomer account of its own,
which is not admitted until the test admits it. Needs root, like test_multiuser.py.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, Jobs, LogTail, skip_module_unless_available, started_cluster

from qpy import paths

skip_module_unless_available()

CLUSTER_NODES = {"n1", "n2", "n3"}


@pytest.fixture(scope="module")
def enrol_cluster():
    with started_cluster(users=("alice",)) as cluster:
        yield cluster


@pytest.fixture
def cluster(enrol_cluster):
    enrol_cluster.reset()
    return enrol_cluster


@pytest.fixture
def newcomer(cluster, request):
    """A fresh account for this test, not admitted; removed from allowed_users after."""
    role = cluster.new_account(re.sub(r"[^a-z]", "", request.node.name)[-12:])
    yield role
    name = cluster.name(role)
    if name in (cluster.admin_home / "allowed_users").read_text().split():
        cluster.admin("removeuser", name)


def bundle_bytes(cluster: Cluster, user: str) -> dict[str, bytes]:
    home = cluster.qpy_home(user)
    return {name: (home / name).read_bytes() for name in paths.BUNDLE}


def status(cluster: Cluster, user: str):
    return cluster.qpy_as(user, "status", "--json", check=False)


# -- 7. from qpy alone to the cluster ----------------------------------------------------------


def test_a_user_who_ran_qpy_alone_first_stays_on_the_cluster(cluster, newcomer):
    """The README's first command, then the cluster bundle and ``qpy restart``: from
    then on the user is on the cluster and stays there while its multiuser is down
    (jobs wait, nothing runs on the login host, the bundle is left as it is), and
    goes on when it is back."""
    jobs = Jobs(cluster, newcomer, cluster.workdir(newcomer, "alone"))
    alone = jobs.sub()
    jobs.wait_started(alone)
    assert json.loads(status(cluster, newcomer).stdout)["allocator"]["kind"] == "personal"
    assert jobs.node(alone) == socket.gethostname()
    jobs.release(alone)
    jobs.wait_finished(alone)

    name = cluster.name(newcomer)
    out = cluster.admin_account.home / "bundles" / newcomer
    cluster.admin("adduser", name, "--out", str(out))
    cluster.install_bundle(newcomer, out)
    cluster.qpy_as(newcomer, "restart")
    shown = json.loads(status(cluster, newcomer).stdout)
    port = (cluster.admin_home / "multiuser_connection_port").read_text().strip()
    assert shown["allocator"] == {"kind": "cluster", "address": f"127.0.0.1:{port}"}
    assert {n["name"] for n in shown["nodes"]} == CLUSTER_NODES
    text = cluster.qpy_as(newcomer, "status").stdout
    assert text.startswith(f"Allocator: the cluster's multiuser at 127.0.0.1:{port}\n"), text
    first = jobs.sub()
    jobs.wait_started(first)
    assert jobs.node(first) in CLUSTER_NODES
    bundle = bundle_bytes(cluster, newcomer)

    cluster.admin("finish")
    wait_for(lambda: cluster.multiuser_pid() is None, WAIT, "the multiuser to stop")
    waiting = jobs.sub()  # accepted: it waits for the cluster
    proc = status(cluster, newcomer)
    assert proc.returncode == 4 and "the cluster's multiuser" in proc.stderr, proc.stderr
    assert jobs.status(waiting) == "queue"
    assert not jobs.started(waiting)
    assert bundle_bytes(cluster, newcomer) == bundle

    cluster.start_multiuser()
    wait_for(lambda: name in cluster.variables()["connected"], WAIT,
             "the newcomer's master to register with the cluster again")
    jobs.release(first)
    jobs.wait_started(waiting)
    assert jobs.node(waiting) in CLUSTER_NODES
    assert bundle_bytes(cluster, newcomer) == bundle
    jobs.release_all()
    jobs.wait_finished(first, waiting)


# -- 13. enrolment codes -------------------------------------------------------------------------

CODE = re.compile(r"qpy join (\S+)")


def issue_code(cluster: Cluster, user: str, *options: str) -> str:
    """``qpy-admin adduser USER`` as the admin: the one-time code it prints."""
    out = cluster.admin("adduser", cluster.name(user), *options).stdout
    found = CODE.search(out)
    assert found, out
    return found.group(1)


def join(cluster: Cluster, user: str, code: str):
    return cluster.qpy_as(user, "join", code, check=False)


def assert_refused(proc, *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.startswith("qpy: ") and proc.stderr.count("\n") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_a_new_user_joins_with_a_code_as_the_users_manual_says(cluster, newcomer):
    """The users' manual, "On a cluster", step by step, by a non-root admin: the admin
    runs ``qpy-admin adduser``, the user ``qpy join CODE`` (no ~/.qpy yet), and from
    then on the user's jobs run on the cluster's nodes."""
    home = cluster.qpy_home(newcomer)
    assert not home.exists()
    code = issue_code(cluster, newcomer)
    proc = join(cluster, newcomer, code)
    assert proc.returncode == 0, proc.stderr
    assert "joined" in proc.stdout.lower(), proc.stdout
    assert home.stat().st_mode & 0o777 == 0o700
    for name in paths.BUNDLE:
        assert (home / name).stat().st_mode & 0o777 == 0o600, name
        assert (home / name).stat().st_uid == cluster.account(newcomer).uid
    assert paths.read_key(home / paths.BUNDLE[2]) == \
        paths.read_key(cluster.admin_home / "keys" / cluster.name(newcomer))
    jobs = Jobs(cluster, newcomer, cluster.workdir(newcomer, "joined"))
    job = jobs.sub()
    jobs.wait_started(job)
    assert jobs.node(job) in CLUSTER_NODES
    assert json.loads(status(cluster, newcomer).stdout)["allocator"]["kind"] == "cluster"
    jobs.release_all()
    jobs.wait_finished(job)


def test_a_code_works_once(cluster, newcomer):
    code = issue_code(cluster, newcomer)
    assert join(cluster, newcomer, code).returncode == 0
    assert_refused(join(cluster, newcomer, code), "code")


def test_a_wrong_code_is_refused_and_logged(cluster, newcomer):
    code = issue_code(cluster, newcomer)
    port, _, secret = code.partition("-")
    letter = "B" if secret.startswith("A") else "A"
    wrong = f"{port}-" + "-".join([letter * 5] * 4)
    log = LogTail(cluster.admin_home / "multiuser.log")
    assert_refused(join(cluster, newcomer, wrong), "code")
    assert not cluster.qpy_home(newcomer).joinpath(paths.BUNDLE[2]).exists()
    assert f"@join:{cluster.name(newcomer)}" in log.text(), log.text()
    assert join(cluster, newcomer, code).returncode == 0  # the right one still works


def test_a_code_is_only_for_its_own_user(cluster, newcomer):
    """Alice, who has an account of her own on the login host, cannot use the
    newcomer's code (nor get a key in the newcomer's name); the newcomer still can."""
    code = issue_code(cluster, newcomer)
    before = bundle_bytes(cluster, "alice")
    log = LogTail(cluster.admin_home / "multiuser.log")
    assert_refused(join(cluster, "alice", code), "code")
    assert bundle_bytes(cluster, "alice") == before
    uid = cluster.account("alice").uid
    assert f"uid {uid}" in log.text(), log.text()
    assert join(cluster, newcomer, code).returncode == 0


def test_an_expired_code_is_refused(cluster, newcomer):
    code = issue_code(cluster, newcomer, "--valid", "1s")
    issued = time.monotonic()
    wait_for(lambda: time.monotonic() > issued + 1.5, WAIT, "the code to expire")
    assert_refused(join(cluster, newcomer, code), "code")


def test_a_malformed_code_is_bad_input(cluster, newcomer):
    proc = join(cluster, newcomer, "not-a-code")
    assert proc.returncode == 2 and proc.stderr.startswith("qpy: "), proc.stderr
