"""A new user joins a cluster: from qpy alone on the login host to the cluster's
multiuser, and the admin's enrolment codes (issue 11 item 7, issue 12 item 13).

Real Unix accounts (``multiuser.py``): each test makes a newcomer account of its own,
which is not admitted until the test admits it. Needs root, like test_multiuser.py.
"""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, Jobs, started_cluster, unavailable

from qpy import paths

REASON = unavailable()
if REASON and not os.environ.get("CI"):
    pytest.skip(REASON, allow_module_level=True)

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
