"""Whole-node jobs (``qpy sub --exclusive``) on a shared installation (tests/multiuser.py):
real accounts, the admin's multiuser, one master per user.

The nodes: n1 (2 cores, 8 GB), n2 (4 cores, 16 GB, big) and n3 (2 cores, 4 GB,
pref_multicore). A whole-node job takes the smallest empty node that fits, multicore-
preferred ones first; while it runs, nobody else's job starts there, the owner's fair
share counts all the node's cores, and a restarted multiuser still counts them (its
ledger and the master's report say so) before and after the owner's master is back.

Needs root; skipped otherwise, except under CI.
"""

from __future__ import annotations

import re

import pytest
from conftest import wait_for
from multiuser import GATED, WAIT, Jobs, skip_module_unless_available, started_cluster

skip_module_unless_available()


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(users=("alice", "bob")) as made:
        yield made


def counted(cluster) -> tuple[int, int]:
    """(cores in use on n3, cores bob uses) as the multiuser counts them (asked by the
    admin: a user's ``qpy status`` goes through their master, which may be reconnecting)."""
    data = cluster.variables()
    bob = data["users"].get(cluster.name("bob"))
    return data["nodes"]["n3"]["used_cores"], bob["used"] if bob else 0


def test_a_whole_node_is_nobody_elses_while_it_runs_also_across_a_restart(cluster, request):
    alice = Jobs(cluster, "alice", cluster.workdir("alice", request.node.name))
    bob = Jobs(cluster, "bob", cluster.workdir("bob", request.node.name))
    out = cluster.qpy_as("bob", "sub", "--exclusive", "-m", "1", "sh", "-c", GATED,
                         cwd=bob.dir).stdout
    whole = int(re.fullmatch(r"Job (\d+) received\.\n", out).group(1))
    bob.wait_started(whole)
    record = cluster.job("bob", whole)
    assert (bob.node(whole), record["n_cores"], record["mem"]) == ("n3", 2, 4)
    assert counted(cluster) == (2, 2)
    pinned = alice.sub(attr="n3")  # n3 has room for it, were it not taken whole
    elsewhere = alice.sub()
    alice.wait_started(elsewhere)
    assert alice.status(pinned) == "queue" and alice.node(elsewhere) != "n3"

    cluster.admin("finish")
    wait_for(lambda: not cluster.multiuser_pid(), WAIT, "the multiuser to stop")
    cluster.start_multiuser()
    assert counted(cluster) == (2, 2)  # from its ledger, whoever reconnects first
    wait_for(lambda: set(cluster.variables()["connected"]) == {
        cluster.name("alice"), cluster.name("bob")}, WAIT, "both masters to be back")
    assert counted(cluster) == (2, 2)  # and as bob's master reports it
    alice.release(elsewhere)
    alice.wait_finished(elsewhere)
    assert alice.status(pinned) == "queue"

    bob.release(whole)
    assert bob.wait_finished(whole)[0]["status"] == "done"
    alice.wait_started(pinned)
    assert alice.node(pinned) == "n3"
    alice.release_all()
    alice.wait_finished(pinned)
    wait_for(lambda: counted(cluster) == (0, 0), WAIT, "n3 to be free")
