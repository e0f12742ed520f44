"""Tests of the fake-node harness (tests/netns_nodes.py): three network-namespace nodes,
each with its own sshd, reached as a real non-root user over real OpenSSH.

Needs root; skipped otherwise, except under CI (CI set), where a missing prerequisite
fails instead.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import netns_nodes
import pytest
from netns_nodes import Cluster, pid_alive


@pytest.fixture(scope="module")
def cluster():
    netns_nodes.require()
    with Cluster(3) as c:
        yield c


def leftovers(state: dict) -> list[str]:
    """What a torn-down cluster left behind (empty if nothing)."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for name in state["netns"]:
        if name in netns:
            found.append(f"namespace {name}")
    for name in [state["bridge"], *state["veths"]]:
        if f" {name}:" in links or f" {name}@" in links:
            found.append(f"link {name}")
    if subprocess.run(["id", state["user"]], capture_output=True).returncode == 0:
        found.append(f"user {state['user']}")
    if os.path.exists(state["home"]):
        found.append(f"home {state['home']}")
    found += [f"PID {pid}" for pid in state["pids"] if pid_alive(pid)]
    if os.path.exists(state["dir"]):
        found.append(f"directory {state['dir']}")
    return found


def snapshot(c: Cluster) -> dict:
    return {"netns": [n.netns for n in c.nodes.values()], "bridge": c.bridge,
            "veths": [n.veth for n in c.nodes.values()], "user": c.user,
            "home": str(c.home()), "dir": str(c.dir),
            "pids": list(c.started_pids) + [p for n in c.names for p in c.node_pids(n)]}


def test_three_nodes_come_up(cluster):
    assert cluster.names == ["node1", "node2", "node3"]
    assert cluster.subnet.startswith("10.250.")
    assert [cluster.address(n) for n in cluster.names] == \
        [f"{cluster.subnet}.{10 + i}" for i in (1, 2, 3)]
    for node in cluster.nodes.values():
        assert node.sshd_pid and pid_alive(node.sshd_pid)
        assert os.readlink(f"/proc/{node.sshd_pid}/exe") == netns_nodes.SSHD
        assert len(node.veth) <= 15


def test_hostname_over_ssh(cluster):
    for node in cluster.names:
        proc = cluster.ssh(node, "hostname")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == node


def test_commands_run_as_the_user(cluster):
    assert cluster.user != "root"
    for node in cluster.names:
        proc = cluster.ssh(node, "id -un; id -u")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [cluster.user, str(cluster.account().uid)]


def test_nodes_share_the_home(cluster):
    marker = f"written on node1 {os.urandom(4).hex()}"
    proc = cluster.ssh("node1", f"echo '{marker}' > ~/shared_probe")
    assert proc.returncode == 0, proc.stderr
    proc = cluster.ssh("node2", "cat ~/shared_probe")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == marker
    probe = cluster.home() / "shared_probe"
    assert probe.stat().st_uid == cluster.account().uid  # written by the user, not root


def test_client_config_checks_host_keys(cluster):
    """Plain ``ssh node2`` as the user resolves through ~/.ssh/config, with strict host key
    checking against the harness's pre-filled known_hosts."""
    proc = cluster.ssh("node2", "true", options=("-G",))
    assert proc.returncode == 0, proc.stderr
    conf = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert conf["hostname"] == cluster.address("node2")
    assert conf["stricthostkeychecking"] == "true"
    assert conf["batchmode"] == "yes"
    assert conf["userknownhostsfile"] == str(cluster.known_hosts)
    assert conf["kexalgorithms"] == "curve25519-sha256"
    assert conf["controlmaster"] == "auto"
    known = cluster.known_hosts.read_text()
    for node in cluster.nodes.values():
        key = node.host_key.with_name(node.host_key.name + ".pub").read_text().split()[1]
        assert f"{node.name},{node.address} ssh-ed25519 {key}" in known


def test_node_to_node_ssh_and_names(cluster):
    proc = cluster.ssh("node1", "ssh node3 hostname; getent hosts node2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "node3"
    assert lines[1].split() == [cluster.address("node2"), "node2"]


def test_run_in_node_without_ssh(cluster):
    proc = cluster.run_in_node("node2", ["sh", "-c", "hostname; id -un; ip -4 route"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["node2", cluster.user]
    routes = lines[2:]  # only the test subnet: no default route out of a node
    assert len(routes) == 1 and routes[0].startswith(f"{cluster.subnet}.0/24 "), routes
    proc = cluster.run_in_node("node2", ["id", "-u"], user="root")
    assert proc.stdout.strip() == "0"


def test_stopped_sshd_fails_then_recovers(cluster):
    assert cluster.ssh("node2", "true").returncode == 0  # a control master is up now
    old = cluster.node("node2").sshd_pid
    cluster.stop_sshd("node2")
    try:
        assert not pid_alive(old)
        proc = cluster.ssh("node2", "hostname")
        assert proc.returncode != 0
        assert proc.stdout == ""
        for node in ("node1", "node3"):
            assert cluster.ssh(node, "hostname").stdout.strip() == node
    finally:
        cluster.start_sshd("node2")
    proc = cluster.ssh("node2", "hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node2"


def test_changed_host_key_is_refused(cluster):
    assert cluster.ssh("node3", "true").returncode == 0
    cluster.change_host_key("node3")
    try:
        proc = cluster.ssh("node3", "hostname")
        assert proc.returncode != 0
        assert proc.stdout == ""
        assert "Host key verification failed" in proc.stderr
        for node in ("node1", "node2"):
            assert cluster.ssh(node, "hostname").stdout.strip() == node
    finally:
        cluster.trust_host_keys()
    proc = cluster.ssh("node3", "hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node3"


def test_existing_account_can_be_authorized(cluster):
    """A second, locked account (as ``useradd`` makes them) is authorized with its own
    key and a config passed with -F; its ~/.ssh stays untouched."""
    name = f"qpytest_nodex_{cluster.tag}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    try:
        home = Path(pwd.getpwnam(name).pw_dir)
        account = cluster.authorize(name)
        proc = cluster.ssh("node1", "id -un; hostname", user=name)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [name, "node1"]
        assert not (home / ".ssh").exists()
        assert str(account.config) in cluster.ssh_argv("node1", "true", user=name)
    finally:
        cluster.ssh("node1", "true", user=name, options=("-O", "exit"))
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


def test_teardown_leaves_nothing():
    netns_nodes.require()
    c = Cluster(2)
    c.start()
    try:
        job = "sleep 300 </dev/null >/dev/null 2>&1 & hostname"  # a job left on the node
        assert c.ssh("node1", job).stdout.strip() == "node1"
        state = snapshot(c)
        assert len(state["pids"]) >= 4  # holders, sshds, sessions
        assert leftovers(state)  # the check sees a live cluster
    finally:
        c.teardown()
    assert leftovers(state) == []
    c.teardown()  # twice is harmless


def test_teardown_after_failed_start(monkeypatch):
    netns_nodes.require()
    c = Cluster(3)
    real = Cluster._spawn_sshd

    def failing(self, node):
        if node.name == "node2":
            raise RuntimeError("node2 broke")
        real(self, node)

    monkeypatch.setattr(Cluster, "_spawn_sshd", failing)
    with pytest.raises(RuntimeError, match="node2 broke"):
        c.start()
    state = {"netns": [n.netns for n in c.nodes.values()], "bridge": c.bridge,
             "veths": [n.veth for n in c.nodes.values()], "user": f"qpytest_node_{c.tag}",
             "home": f"/home/qpytest_node_{c.tag}", "dir": str(c.dir),
             "pids": list(c.started_pids)}
    assert len(state["pids"]) == 4  # three holders and node1's sshd
    assert leftovers(state) == []


KILLED_RUN = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from netns_nodes import Cluster
c = Cluster(2)
c.start()
assert c.ssh("node2", "hostname").returncode == 0  # leaves a control master behind
print(json.dumps({"netns": [n.netns for n in c.nodes.values()], "bridge": c.bridge,
                  "veths": [n.veth for n in c.nodes.values()], "user": c.user,
                  "home": str(c.home()), "dir": str(c.dir),
                  "pids": c.started_pids + [p for n in c.names for p in c.node_pids(n)]}),
      flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_next_run_sweeps_a_killed_run():
    """A test process killed outright leaves namespaces and a user behind; the next
    cluster's start (or sweep_stale) removes them."""
    netns_nodes.require()
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    state = json.loads(proc.stdout)
    assert leftovers(state)
    with Cluster(1) as c:
        assert leftovers(state) == []
        assert c.ssh("node1", "hostname").stdout.strip() == "node1"


def test_require_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(netns_nodes, "unavailable", lambda: "no netns here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no netns here"):
        netns_nodes.require()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no netns here"):
        netns_nodes.require()


def test_unavailable_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in netns_nodes.unavailable()
