"""Jobs on several whole nodes (``qpy sub -N K``) over real OpenSSH: two network-namespace
nodes with their own sshd (tests/netns_nodes.py), the admin's multiuser and alice's
master (tests/multiuser.py). Home directories are shared, as on the clusters qpy is for.

A job's processes on its other node are started through its rsh agent (``$QPY_RSH``),
so they are no children of qpy's supervisor; the namespaces share this machine's PID
space, so each test checks them by PID here, and checks that they run in the other
node's network namespace.

Needs root; skipped otherwise, except under CI, where a missing prerequisite fails.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import pid_alive, wait_for
from multiuser import WAIT, Cluster, Jobs, end_all, nodes_up, remote_cluster

from qpy import jobspec, rsh
from qpy_multiuser import reported, user_limits
from qpy_multiuser.allocator import Allocator
from qpy_multiuser.ledger import Ledger
from qpy_multiuser.nodes import Node
from qpy_multiuser.rules import Rules

NODES = """\
node1 cores=2 memory=4
node2 cores=2 memory=4
"""

# A job that records where it runs, its node file and the PIDs of a sleep on the first
# node and one on the other node (started over ssh by the rsh agent), then waits for
# ``go_ID`` and exits 3 (leaving the remote sleep behind).
SPREAD = ('echo "$QPY_NODES" > nodes_$QPY_JOB_ID; hostname > host_$QPY_JOB_ID; '
          'cp "$QPY_NODEFILE" nodefile_$QPY_JOB_ID; '
          'other=$(echo "$QPY_NODES" | cut -d, -f2); '
          '$QPY_RSH "$other" "cd $PWD && echo \\$\\$ > remote_$QPY_JOB_ID.tmp && '
          'mv remote_$QPY_JOB_ID.tmp remote_$QPY_JOB_ID && exec sleep 1000" & '
          'sleep 1000 & echo $! > local_$QPY_JOB_ID; '
          'while [ ! -e remote_$QPY_JOB_ID ]; do sleep 0.1; done; touch started_$QPY_JOB_ID; '
          'while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.1; done; exit 3')


@pytest.fixture(scope="module")
def world():
    """(qpy cluster, ssh nodes): alice and the admin can ssh to node1 and node2."""
    with remote_cluster(2, NODES, users=("alice",)) as made:
        yield made


@pytest.fixture
def cluster(world):
    """The two-node world with both nodes up; alice's jobs all ended after the test."""
    nodes_up(world[0])
    yield world
    end_all(world[0])


@pytest.fixture
def work(world, request):
    qpy, _ = world
    return Jobs(qpy, "alice", qpy.workdir("alice", request.node.name))


def sub(qpy: Cluster, directory: Path, *args: str, check: bool = True):
    proc = qpy.qpy_as("alice", "sub", *args, cwd=directory, check=check)
    if not check:
        return proc
    found = re.fullmatch(r"Job (\d+) received\.\n", proc.stdout)
    assert found, proc.stdout
    return int(found.group(1))


def spread(qpy: Cluster, work: Jobs) -> tuple[int, int, int]:
    """A running ``-N 2`` job: its ID and the PIDs of its sleeps on the first node and
    on the other one."""
    job = sub(qpy, work.dir, "-N", "2", "-m", "1", "sh", "-c", SPREAD)
    work.wait_started(job)
    local = int((work.dir / f"local_{job}").read_text())
    remote = int((work.dir / f"remote_{job}").read_text())
    assert pid_alive(local) and pid_alive(remote)
    return job, local, remote


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def gone(*pids: int) -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), WAIT, f"processes {pids} to end")


def counted(qpy: Cluster) -> tuple[int, dict, dict]:
    """(cores alice uses, cores used per node, the other nodes of her jobs) as the
    multiuser counts them."""
    data = qpy.variables()
    alice = data["users"].get(qpy.name("alice")) or {}
    return (alice.get("used", 0), {n: v["used_cores"] for n, v in data["nodes"].items()},
            alice.get("spans", {}))


def test_two_nodes_their_names_node_file_and_share_and_kill_reaches_both(cluster, work):
    qpy, nodes = cluster
    job, local, remote = spread(qpy, work)
    record = qpy.job("alice", job)
    first, other = record["nodes"]
    assert {first, other} == {"node1", "node2"} and record["node"] == first
    assert (work.dir / f"nodes_{job}").read_text().strip() == f"{first},{other}"
    assert (work.dir / f"host_{job}").read_text().strip() == first  # the command runs there
    lines = (work.dir / f"nodefile_{job}").read_text().splitlines()
    assert lines == [first, first, other, other]  # one line per core, the first node first
    # the remote sleep really runs on the other node, the local one on the first
    assert netns(remote) == netns(nodes.node(other).holder_pid)
    assert netns(local) == netns(nodes.node(first).holder_pid)
    # fair share counts both nodes' cores; qpy check shows both nodes
    assert counted(qpy) == (4, {"node1": 2, "node2": 2}, {str(job): [[other, 2, 4.0]]})
    assert f"{first}+{other}" in qpy.qpy_as("alice", "check", str(job)).stdout

    qpy.qpy_as("alice", "kill", str(job))
    gone(local, remote)
    assert qpy.job("alice", job)["status"] == "killed"
    wait_for(lambda: counted(qpy)[0] == 0, WAIT, "the nodes to be free")
    assert not list(Path(qpy.qpy_home("alice"), "hosts").glob(f"job_{job}.*"))


def test_the_end_of_the_command_ends_what_it_left_on_the_other_node(cluster, work):
    qpy, _ = cluster
    job, local, remote = spread(qpy, work)
    work.release(job)
    record = work.wait_finished(job)[0]
    assert (record["status"], record["exit_code"]) == ("done", 3)
    gone(local, remote)


def test_all_nodes_at_once_or_none_and_why_it_waits(cluster, work):
    qpy, _ = cluster
    small = work.sub(attr="node1")
    work.wait_started(small)
    job = sub(qpy, work.dir, "-N", "2", "-m", "1", "sh", "-c", SPREAD)
    why = qpy.qpy_as("alice", "why", str(job)).stdout
    assert "needs 2 free whole nodes" in why and "1 is free now" in why, why
    assert qpy.job("alice", job)["status"] == "queue"
    assert counted(qpy)[:2] == (1, {"node1": 1, "node2": 0})  # node2 is not held for it
    work.release(small)
    work.wait_started(job)
    assert counted(qpy)[0] == 4


def test_a_restarted_master_and_multiuser_keep_both_nodes_and_kill_reaches_both(cluster, work):
    qpy, _ = cluster
    job, local, remote = spread(qpy, work)
    before = counted(qpy)
    qpy.kill(qpy.master_pid("alice"))
    qpy.admin("finish")
    wait_for(lambda: not qpy.multiuser_pid(), WAIT, "the multiuser to stop")
    qpy.start_multiuser()
    assert counted(qpy) == before  # from its ledger
    record = qpy.job("alice", job)  # starts alice's master again
    assert record["status"] == "running" and len(record["nodes"]) == 2
    wait_for(lambda: qpy.name("alice") in qpy.variables()["connected"], WAIT,
             "alice's master to register")
    assert counted(qpy) == before  # and as her master reports it
    qpy.qpy_as("alice", "kill", str(job))
    gone(local, remote)


def test_a_job_whose_other_node_goes_down_is_killed_with_the_reason(cluster, work):
    qpy, nodes = cluster
    job, local, _ = spread(qpy, work)
    other = qpy.job("alice", job)["nodes"][1]
    nodes.stop_sshd(other)  # the node goes down with everything in it
    try:
        record = work.wait_finished(job)[0]
        assert (record["status"], record["reason"]) == (
            "killed", f"node {other} of the job went down"), record
        gone(local)
    finally:
        nodes.start_sshd(other)


@pytest.mark.parametrize("value, code, text", [
    ("0", 2, "-N: number of nodes must be 1 to"),
    ("x", 2, "-N: number of nodes must be a whole number, not 'x'"),
    ("5", 1, "it asks for 5 whole nodes, the cluster has 2 that fit it (node1, node2)"),
])
def test_bad_node_counts_are_refused(cluster, work, value, code, text):
    qpy, _ = cluster
    proc = sub(qpy, work.dir, "-N", value, "-m", "1", "true", check=False)
    assert proc.returncode == code and text in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not [j for j in qpy.jobs("alice") if j["status"] == "queue"]


def test_the_rsh_agent_marks_the_remote_command_and_passes_ssh_options():
    options, host, words = rsh.split(["-x", "-p", "22", "node2", "orted", "--x", "1"])
    assert (options, host, words) == (["-x", "-p", "22"], "node2", ["orted", "--x", "1"])
    line = rsh.remote_command(["PATH=/x:$PATH", ";", "orted"],
                              {"QPY_JOB_ID": "7", "QPY_RUN_TAG": "ab12"})
    assert line == ("QPY_JOB_ID=7 QPY_RUN_TAG=ab12; export QPY_JOB_ID QPY_RUN_TAG; "
                    "PATH=/x:$PATH ; orted")


# -- the allocator and the ledger alone (pure: no daemons) ----------------------------------


def allocator(*names: str) -> Allocator:
    return Allocator({n: Node(n, n, 2, 4.0) for n in names}, Rules("even"))


def whole(job: int, count: int, cores: int = 1) -> dict:
    return {"cores": cores, "mem": 1.0, "attr": None, "exclusive": True, "nodes": count,
            "jobs": [job]}


def test_the_allocator_grants_all_nodes_at_once_or_none_and_counts_them_all():
    a = allocator("n1", "n2", "n3")
    u = a.user("u")
    a.nodes["n3"].drain_since = 1.0  # drained: never chosen
    a.pool_changed("n3 drained")
    assert a.request(u, [{"cores": 1, "mem": 1.0, "attr": None, "jobs": [1]}], 2)[0]
    grants, refused = a.request(u, [whole(2, 2)], 1)
    assert (grants, refused) == ([], True)  # n1 or n2 is busy, n3 drained: nothing held
    assert u.used == 1 and not u.spans and u.refused[4] == 2
    a.remove(u, 1)
    (grant,), refused = a.request(u, [whole(2, 2)], 1)
    assert not refused and {grant["node"], grant["others"][0]["node"]} == {"n1", "n2"}
    assert (grant["cores"], grant["others"][0]["cores"], u.used) == (2, 2, 4)
    assert a.nodes["n1"].used_cores == a.nodes["n2"].used_cores == 2
    a.remove(u, 2)
    assert u.used == 0 and not u.spans and a.nodes["n2"].used_cores == 0


def test_a_user_limit_counts_the_cores_of_every_node():
    a = allocator("n1", "n2")
    a.set_limits(user_limits.parse("u cores=3\n"))
    u = a.user("u")
    assert a.request(u, [whole(1, 2)], 1) == ([], True)
    assert "3 cores" in u.limited, u.limited


def test_a_restored_or_reported_multi_node_job_holds_all_its_nodes(tmp_path):
    a = allocator("n1", "n2")
    u = a.user("u")
    (grant,), _ = a.request(u, [whole(7, 2)], 1)
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.record("u", [], [(7, *u.jobs[7], u.spans[7])])
    running = ledger.load()["u"]
    other = grant["others"][0]["node"]
    assert running == [{"job": 7, "node": grant["node"], "cores": 2, "mem": 4.0,
                        "more": [[other, 2, 4.0]]}]
    b = allocator("n1", "n2")
    reported.restore(b, b.user("u"), running)  # a restarted multiuser
    assert b.user("u").used == 4 and b.nodes[other].used_cores == 2
    assert reported.reconcile(b, b.user("u"), running, False) == []  # its master agrees
    assert b.user("u").used == 4
    c = allocator("n1", "n2")  # no ledger: believed as it fits
    assert reported.reconcile(c, c.user("u"), running, True) == [] and c.user("u").used == 4


def test_the_nodes_directive_and_option_make_a_whole_node_job(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n#QPY nodes=3\ntrue\n")
    script.chmod(0o755)
    spec = jobspec.build(["./run.sh"], str(tmp_path), None, None, None, None)
    assert (spec["exclusive"], spec["n_nodes"]) == (True, 3)
    spec = jobspec.build(["./run.sh"], str(tmp_path), None, None, None, None, nodes="2")
    assert (spec["exclusive"], spec["n_nodes"]) == (True, 2)  # the option wins
    one = jobspec.build(["true"], str(tmp_path), None, None, None, None, nodes="1")
    assert (one["exclusive"], "n_nodes" in one) == (True, False)  # -N 1 is --exclusive
    script.write_text("#!/bin/sh\n#QPY nodes=0\ntrue\n")
    with pytest.raises(jobspec.SpecError, match="#QPY nodes: number of nodes must be 1 to"):
        jobspec.build(["./run.sh"], str(tmp_path), None, None, None, None)
