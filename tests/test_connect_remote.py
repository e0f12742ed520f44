"""qpy connect on remote nodes over real OpenSSH: network-namespace nodes with their own
sshd (tests/netns_nodes.py), the admin's multiuser monitoring them, alice's master and her
terminal (tests/terminal.py) on this host. Attaching is ``ssh -t NODE tmux ... attach``
through alice's own ssh configuration; home directories are shared, as on real clusters.

Needs root; skipped otherwise, except under CI, where a missing prerequisite fails.
"""

from __future__ import annotations

import json
import re
import shutil
import signal

import pytest
from conftest import pid_alive, wait_for
from multiuser import WAIT, nodes_up, remote_cluster
from terminal import Terminal

NODES = """\
node1 cores=2 memory=8
node2 cores=2 memory=8
"""


@pytest.fixture(scope="module")
def world():
    with remote_cluster(2, NODES, users=("alice",)) as (qpy, nodes):
        yield qpy, nodes


@pytest.fixture
def cluster(world):
    qpy, nodes = world
    nodes_up(qpy)
    yield qpy, nodes
    qpy.qpy_as("alice", "kill", "all", check=False)


@pytest.fixture
def term(world, request):
    qpy, _ = world
    directory = qpy.workdir("alice", "term-" + request.node.name[-20:])
    terminal = Terminal(directory, None, qpy.argv_as("alice", []))
    yield terminal
    terminal.close()


def sessions(qpy) -> list[dict]:
    return json.loads(qpy.qpy_as("alice", "connect", "-l", "--json").stdout)["sessions"]


def ready(qpy, job: int) -> dict:
    return wait_for(lambda: (s := next((s for s in sessions(qpy) if s["id"] == job), None))
                    and s["ready"] and s, WAIT, f"session {job}")


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_session_on_a_node_attached_over_ssh_detached_reattached_and_exited(cluster, term):
    qpy, nodes = cluster
    qpy_bin, home = str(qpy.bin / "qpy"), qpy.account("alice").home
    term.run("a", [qpy_bin, "connect", "-a", "node2"], home)
    term.type("a", 'echo "ON-$(hostname)-$QPY_NODE"')
    term.wait_screen("a", "ON-node2-node2")  # the shell runs on the node
    job = sessions(qpy)[0]
    server = int(nodes.run_in_node("node2", ["tmux", "-S", job["socket"], "display-message",
                                             "-p", "#{pid}"]).stdout)
    assert server in nodes.node_pids("node2")  # the tmux server is inside node2
    term.send("a", "C-b", "d")
    assert term.wait_status("a") == 0
    qpy.kill(qpy.master_pid("alice"))  # the session does not need the master
    term.run("b", [qpy_bin, "connect", str(job["id"])], home)  # another shell
    term.wait_screen("b", "ON-node2-node2")
    term.type("b", "exit 3")
    assert term.wait_status("b") == 3
    record = qpy.job("alice", job["id"])
    assert (record["status"], record["exit_code"], record["node"]) == ("done", 3, "node2")
    wait_for(lambda: not pid_alive(server), WAIT, "the tmux server to end")


def test_kill_ends_a_remote_session_while_attached(cluster, term):
    qpy, _ = cluster
    term.run("a", [str(qpy.bin / "qpy"), "connect", "-a", "node1"], qpy.account("alice").home)
    term.type("a", "echo UP-$((20+22))")
    term.wait_screen("a", "UP-42")
    job = sessions(qpy)[0]["id"]
    qpy.qpy_as("alice", "kill", str(job))
    assert term.wait_status("a") == 128 + signal.SIGTERM
    assert qpy.job("alice", job)["status"] == "killed"


@pytest.mark.skipif(shutil.which("xpra") is None or shutil.which("xmessage") is None,
                    reason="xpra and xmessage are needed")
def test_gui_sessions_need_xpra_on_the_node_and_run_there(cluster):
    qpy, nodes = cluster
    hide = ["mount", "--bind", "/dev/null", shutil.which("xpra")]  # no xpra on node2 now
    assert nodes.run_in_node("node2", hide, user="root").returncode == 0
    try:
        wait_for(lambda: "xpra" not in next(n for n in qpy.status_json("alice")["nodes"]
                                            if n["name"] == "node2")["tools"],
                 WAIT, "monitoring to see node2 without xpra")
        proc = qpy.qpy_as("alice", "connect", "--gui", "--detach", "-a", "node2", "xmessage",
                          "hi", check=False)
        assert (proc.returncode, proc.stderr) == (1, "qpy: xpra is not installed on node2\n")
        assert sessions(qpy) == []  # nothing submitted
        out = qpy.qpy_as("alice", "connect", "--gui", "--detach", "xmessage", "hi").stdout
        job = int(re.fullmatch(r"Job (\d+) received\.\n", out).group(1))
        session = ready(qpy, job)
        assert session["node"] == "node1"  # the node that has xpra
        xpra = [p for p in nodes.node_pids("node1")
                if f":{session['display']}".encode() in cmdline(p) and b"xpra" in cmdline(p)]
        assert xpra, "the xpra server runs inside node1"
        qpy.qpy_as("alice", "kill", str(job))
        wait_for(lambda: not any(pid_alive(p) for p in xpra), WAIT, "xpra to end with the job")
    finally:
        nodes.run_in_node("node2", ["umount", shutil.which("xpra")], user="root")
