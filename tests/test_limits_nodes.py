"""Enforcement on a shared installation (qpy/limits.py, qpy/cgroups.py): real Unix users
(tests/multiuser.py), a real memory cgroup delegated by root as an admin would, and a
remote node over real OpenSSH in a network namespace (tests/netns_nodes.py).

The nodes: ``n1`` (this machine) delegates ``<v1 memory>/qpytest-TAG/<user>`` to alice
only; ``n2`` (this machine) turns cgroups off; ``node1`` (a namespace node) has the
default, which is the watchdog here. Each node has a CPU lock file of this run's own, so
jobs of other runs on this machine do not take its CPUs.

Needs root and the cgroup v1 memory hierarchy; skipped otherwise, except under CI, where
a missing prerequisite fails.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import netns_nodes
import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, started_cluster
from test_limits import ALLOCATE, SEE

V1 = "/sys/fs/cgroup/memory"
TAG = secrets.token_hex(3)
BASE = f"{V1}/qpytest-{TAG}"
LOCK = f"/tmp/qpytest-cpus-{TAG}"
NODES = f"""\
n1 address=localhost cores=2 memory=8 cgroup={BASE}/%u cpu_lock={LOCK}-n1
n2 address=localhost cores=2 memory=8 cgroup=off cpu_lock={LOCK}-n2
node1 cores=2 memory=8 cpu_lock={LOCK}-node1
"""
CPUS = len(os.sched_getaffinity(0))


def require_cgroup_v1() -> None:
    reason = None
    if os.geteuid() != 0 or not os.access(V1, os.W_OK):
        reason = f"needs root and the cgroup v1 memory hierarchy at {V1}"
    elif CPUS < 2:
        reason = "needs at least 2 CPUs"
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def world():
    """(qpy cluster, ssh nodes): alice's memory cgroup delegated on n1; alice and the
    admin can ssh to node1."""
    require_cgroup_v1()
    netns_nodes.require()
    with started_cluster(users=("alice", "bob"), nodes=NODES) as qpy, \
            netns_nodes.Cluster(1, user=qpy.name("alice"), home_config=True) as nodes:
        nodes.authorize(qpy.name("admin"), home_config=True)
        alice = Path(BASE, qpy.name("alice"))
        alice.mkdir(parents=True)
        for path in [alice, *alice.iterdir()]:  # what an admin does to delegate it
            os.chown(path, qpy.account("alice").uid, qpy.account("alice").gid)
        qpy.write_admin_file("node_check_interval", "0.5\n")
        qpy.admin("finish")
        wait_for(lambda: not qpy.multiuser_pid(), WAIT, "the multiuser to stop")
        qpy.start_multiuser()
        try:
            yield qpy, nodes
        finally:
            _remove_cgroups(Path(BASE))
            for name in ("n1", "n2", "node1"):
                Path(f"{LOCK}-{name}").unlink(missing_ok=True)


def _remove_cgroups(path: Path) -> None:
    """Cgroup directories go with rmdir, children first (their files cannot be deleted)."""
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir():
                _remove_cgroups(child)
        os.rmdir(path)


@pytest.fixture
def cluster(world):
    qpy, nodes = world
    wait_for(lambda: all(n["state"] == "up" for n in qpy.status_json("alice")["nodes"]),
             WAIT, "every node to be up")
    for user in ("alice", "bob"):
        qpy.qpy_as(user, "kill", "all", check=False)
    return qpy, nodes


@pytest.fixture
def workdir(world, request):
    qpy, _ = world
    return lambda user: qpy.workdir(user, request.node.name)


def sub(qpy: Cluster, user: str, directory: Path, *args: str) -> int:
    out = qpy.qpy_as(user, "sub", *args, cwd=directory).stdout
    found = re.fullmatch(r"Job (\d+) received\.\n", out)
    assert found, out
    return int(found.group(1))


def finished(qpy: Cluster, user: str, job: int) -> dict:
    return wait_for(lambda: (r := qpy.job(user, job))["status"] not in ("queue", "running")
                    and r, WAIT, f"{user}'s job {job} to finish")


def seen(directory: Path, job: int, what: str) -> list[str]:
    path = directory / f"{what}_{job}"
    wait_for(lambda: path.exists() and path.read_text().endswith("\n"), WAIT, path.name)
    return path.read_text().split()


HOG = f"grep memory /proc/self/cgroup > cgroup_$QPY_JOB_ID; {ALLOCATE}"


def test_status_shows_what_enforces_memory_on_each_node(cluster):
    qpy, _ = cluster
    lines = qpy.qpy_as("bob", "status").stdout.splitlines()
    assert "Memory limits: cgroup v1 (n1); watchdog (n2, node1)" in lines, lines
    nodes = {n["name"]: n for n in qpy.status_json("alice")["nodes"]}
    assert nodes["n1"]["cgroup"] == f"{BASE}/%u" and nodes["n2"]["cgroup"] == "off"
    assert [nodes[n]["memory_limit"] for n in ("n1", "n2", "node1")] == \
        ["cgroup v1", "watchdog", "watchdog"]


def test_a_delegated_cgroup_holds_the_job_and_ends_it_past_its_memory(cluster, workdir):
    qpy, _ = cluster
    here = workdir("alice")
    small = sub(qpy, "alice", here, "-a", "n1", "-m", "0.5", "sh", "-c",
                "grep memory /proc/self/cgroup > cgroup_$QPY_JOB_ID")
    hog = sub(qpy, "alice", here, "-a", "n1", "-m", "0.05", "sh", "-c", HOG)
    assert finished(qpy, "alice", small)["status"] == "done"
    record = finished(qpy, "alice", hog)
    assert (record["status"], record["signal"]) == ("killed", 9), record
    assert record["reason"] == "memory limit 0.05 GB (peak 0.05 GB)", record
    alice = qpy.name("alice")
    for job in (small, hog):  # each ran in a cgroup of its own, removed after its end
        cgroup = (here / f"cgroup_{job}").read_text().strip()
        assert cgroup.endswith(f":memory:/qpytest-{TAG}/{alice}/job_{job}"), cgroup
        wait_for(lambda j=job: not Path(BASE, alice, f"job_{j}").exists(), WAIT,
                 f"the cgroup of job {job} to be removed")


def test_a_user_without_a_delegated_cgroup_gets_the_watchdog(cluster, workdir):
    qpy, _ = cluster
    here = workdir("bob")
    hog = sub(qpy, "bob", here, "-a", "n1", "-m", "0.05", "sh", "-c", HOG)
    record = finished(qpy, "bob", hog)
    assert (record["status"], record["signal"]) == ("killed", 9), record
    assert re.fullmatch(r"memory limit 0\.05 GB \(peak 0\.[0-9]+ GB\)", record["reason"])
    assert f"qpytest-{TAG}" not in (here / f"cgroup_{hog}").read_text()


def test_jobs_of_two_users_on_one_node_get_distinct_cpus_across_restarts(cluster, workdir):
    qpy, _ = cluster
    alice_dir, bob_dir = workdir("alice"), workdir("bob")
    first = sub(qpy, "alice", alice_dir, "-a", "n1", "-m", "1", "sh", "-c", SEE)
    other = sub(qpy, "bob", bob_dir, "-a", "n1", "-m", "1", "sh", "-c", SEE)
    mine, bobs = seen(alice_dir, first, "cpus"), seen(bob_dir, other, "cpus")
    assert len(mine) == len(bobs) == 1 and mine != bobs, (mine, bobs)
    assert seen(bob_dir, other, "threads") == ["1", "1", "1"]

    qpy.kill(qpy.multiuser_pid())  # neither daemon knows the CPUs: the nodes do
    qpy.kill(qpy.master_pid("alice"))
    qpy.start_multiuser()
    (bob_dir / f"go_{other}").touch()
    assert finished(qpy, "bob", other)["status"] == "done"
    second = sub(qpy, "alice", alice_dir, "-a", "n1", "-m", "1", "sh", "-c", SEE)
    assert seen(alice_dir, second, "cpus") == bobs  # the one free CPU of n1
    assert qpy.job("alice", first)["status"] == "running"
    for job in (first, second):
        (alice_dir / f"go_{job}").touch()
    assert [finished(qpy, "alice", j)["status"] for j in (first, second)] == ["done"] * 2


def test_a_remote_job_is_pinned_and_ended_past_its_memory(cluster, workdir):
    qpy, nodes = cluster
    here = workdir("alice")
    jobs = [sub(qpy, "alice", here, "-a", "node1", "-m", "1", "sh", "-c", SEE) for _ in range(2)]
    cpus = [seen(here, job, "cpus") for job in jobs]
    assert all(len(c) == 1 for c in cpus) and cpus[0] != cpus[1], cpus
    assert [seen(here, job, "threads") for job in jobs] == [["1", "1", "1"]] * 2
    for job in jobs:
        (here / f"go_{job}").touch()
    hog = sub(qpy, "alice", here, "-a", "node1", "-m", "0.05", "sh", "-c",
              f"hostname > host_$QPY_JOB_ID; {HOG}")
    record = finished(qpy, "alice", hog)
    assert (here / f"host_{hog}").read_text() == "node1\n"  # it really ran there
    assert (record["status"], record["signal"]) == ("killed", 9), record
    assert re.fullmatch(r"memory limit 0\.05 GB \(peak 0\.[0-9]+ GB\)", record["reason"])
