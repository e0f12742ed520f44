"""qpy connect as a group uses it: real Unix accounts, the admin's multiuser and its
``interactive`` file (limits and idle policy), one master per user (tests/multiuser.py).
Sessions are typed into through a real terminal run as the user (tests/terminal.py).

Needs root; skipped otherwise, except under CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
from conftest import wait_for
from multiuser import WAIT, Jobs, skip_module_unless_available, started_cluster
from terminal import Terminal

skip_module_unless_available()


@pytest.fixture(scope="module")
def mu():
    with started_cluster(users=("alice", "bob")) as cluster:
        yield cluster


@pytest.fixture
def cluster(mu):
    """Quiet, with no interactive file (no limits, no idle policy) unless a test writes one."""
    yield mu
    path = mu.admin_home / "interactive"
    if path.exists():
        path.unlink()
        mu.admin("distribute")
    mu.reset()


@pytest.fixture
def term(cluster, request):
    directory = cluster.workdir("alice", "term-" + request.node.name[-20:])
    terminal = Terminal(directory, None, cluster.argv_as("alice", []))
    yield terminal
    terminal.close()


def policy(cluster, text: str) -> None:
    cluster.write_admin_file("interactive", text)
    cluster.admin("distribute")


def connect(cluster, user: str, *args: str, check: bool = True, cwd=None):
    return cluster.qpy_as(user, "connect", *args, check=check, cwd=cwd)


def detached(cluster, user: str, *args: str) -> int:
    out = connect(cluster, user, "--detach", *args).stdout
    found = re.fullmatch(r"Job (\d+) received\.\n", out)
    assert found, out
    return int(found.group(1))


def sessions(cluster, user: str) -> list[dict]:
    return json.loads(connect(cluster, user, "-l", "--json").stdout)["sessions"]


def session(cluster, user: str, job: int) -> dict | None:
    return next((s for s in sessions(cluster, user) if s["id"] == job), None)


def ready(cluster, user: str, job: int) -> dict:
    return wait_for(lambda: (s := session(cluster, user, job)) and s["ready"] and s, WAIT,
                    f"{user}'s session {job}")


def qpy_bin(cluster) -> str:
    return str(cluster.bin / "qpy")


# -- a session of a real user --------------------------------------------------------------


def test_a_users_session_type_detach_reattach_exit_and_kill(cluster, term):
    home = cluster.account("alice").home
    conf = home / ".tmux.conf"  # the user's own tmux configuration is kept
    conf.write_text('set -g status-right "ALICE-CONF"\n')
    cluster.account("alice").own(conf, 0o644)
    term.run("a", [qpy_bin(cluster), "connect"], home)
    term.wait_screen("a", "ALICE-CONF")
    term.type("a", 'echo "I-am-$(id -un)-in-$PWD"')
    term.wait_screen("a", f"I-am-{cluster.name('alice')}-in-{home}")
    job = sessions(cluster, "alice")[0]
    assert job["node"] in ("n1", "n2", "n3")
    sock = job["socket"]
    assert os.stat(sock).st_uid == cluster.account("alice").uid  # a socket of the user's
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700  # in a private dir
    term.send("a", "C-b", "d")
    assert term.wait_status("a") == 0
    term.run("b", [qpy_bin(cluster), "connect", str(job["id"])], home)
    term.wait_screen("b", f"I-am-{cluster.name('alice')}")
    term.type("b", "exit 4")
    assert term.wait_status("b") == 4
    assert cluster.job("alice", job["id"])["exit_code"] == 4
    second = detached(cluster, "alice")
    ready(cluster, "alice", second)
    term.run("c", [qpy_bin(cluster), "connect"], home)
    term.type("c", "echo SECOND-$((40+2))")
    term.wait_screen("c", "SECOND-42")
    cluster.qpy_as("alice", "kill", str(second))
    assert term.wait_status("c") == 128 + signal.SIGTERM
    assert cluster.job("alice", second)["status"] == "killed"
    conf.unlink()


# -- the admin's limits --------------------------------------------------------------------


def test_the_cap_on_sessions_cores_and_memory_is_refused_with_the_reason(cluster):
    policy(cluster, "# interactive sessions\nmax_sessions 2\nmax_cores 2\nmax_mem 4\n")
    proc = connect(cluster, "alice", "--detach", "-n", "3", check=False)
    assert (proc.returncode, proc.stderr) == (1, "qpy: an interactive session may have at "
                                                 "most 2 cores (max_cores), not 3\n")
    proc = connect(cluster, "alice", "--detach", "-m", "6", check=False)
    assert proc.stderr == "qpy: an interactive session may have at most 4 GB of memory " \
                          "(max_mem), not 6\n"
    first = detached(cluster, "alice", "-n", "2", "-m", "4")
    detached(cluster, "alice", "-m", "1")
    proc = connect(cluster, "alice", "--detach", "-m", "1", check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "qpy: you have 2 interactive sessions, the most the admin allows " \
                          "(max_sessions 2): end one with qpy kill ID (qpy connect -l lists " \
                          "them)\n"
    assert len(sessions(cluster, "alice")) == 2  # nothing was added
    assert detached(cluster, "bob", "-m", "1")  # the cap is per user
    cluster.qpy_as("alice", "kill", str(first))
    wait_for(lambda: len(sessions(cluster, "alice")) == 1, WAIT, "a session to end")
    assert detached(cluster, "alice", "-m", "1")  # room again


def test_a_malformed_interactive_file_is_refused_and_the_old_limits_stay(cluster):
    policy(cluster, "max_sessions 1\n")
    cluster.write_admin_file("interactive", "max_sessions 1\nidle_limit soon\n")
    proc = cluster.admin("distribute", check=False)
    assert proc.returncode == 2
    assert re.fullmatch(r"qpy-admin: \S+/interactive:2: expected a duration like "
                        r"2-00:00:00, 48:00:00 or 2d, not 'soon'\n", proc.stderr), proc.stderr
    detached(cluster, "alice", "-m", "1")
    proc = connect(cluster, "alice", "--detach", "-m", "1", check=False)
    assert "max_sessions 1" in proc.stderr  # the limits as they were


# -- idle time and the idle policy -------------------------------------------------------------


def test_idle_sessions_are_warned_shown_to_the_admin_and_ended(cluster):
    policy(cluster, "idle_warn 2s\nidle_limit 00:00:06\n")
    job = detached(cluster, "alice", "-m", "1")
    ready(cluster, "alice", job)

    def warned():
        proc = cluster.qpy_as("alice", "check")  # the next qpy command says it
        return proc.stderr if "has been idle" in proc.stderr else None

    line = wait_for(warned, WAIT, "the warning on alice's next command")
    assert re.fullmatch(rf"qpy: session {job} has been idle for 00:00:0\d; sessions idle for "
                        rf"00:00:06 are ended \(qpy connect {job}, or qpy kill {job}\)\n", line)
    status = cluster.admin("status").stdout.splitlines()
    table = status[next(i for i, r in enumerate(status) if r.startswith("interactive session")):]
    row = next(r for r in table if r.startswith(cluster.name("alice")))
    assert row.split()[1] == str(job) and re.fullmatch(r"\d\d:\d\d:\d\d", row.split()[-1]), row
    record = wait_for(
        lambda: (r := cluster.job("alice", job))["status"] == "killed" and r, WAIT,
        "the idle session to be ended")
    assert re.fullmatch(r"idle 00:00:0[6-9]", record["reason"]), record["reason"]


EVENTS = 'echo "$QPY_EVENT $QPY_JOB_ID $QPY_STATUS $QPY_IDLE $QPY_EXIT $QPY_NODE" >> events.txt'


def test_an_idle_warning_runs_the_notify_command_once_and_the_end_runs_it_too(cluster):
    work = cluster.workdir("alice", "idle-notify")
    events = work / "events.txt"

    def lines(count: int) -> list[str] | None:
        text = events.read_text() if events.exists() else ""
        return text.splitlines() if text.count("\n") >= count else None

    cluster.qpy_as("alice", "config", "notify", EVENTS)
    try:
        policy(cluster, "idle_warn 2s\n")
        out = connect(cluster, "alice", "--detach", "-m", "1", cwd=work).stdout
        job = int(re.fullmatch(r"Job (\d+) received\.\n", out).group(1))
        node = ready(cluster, "alice", job)["node"]
        wait_for(lambda: lines(1), WAIT, "the notify command of the idle warning")
        cluster.qpy_as("alice", "kill", str(job))
        got = wait_for(lambda: lines(2), WAIT, "the notify command of the end")
    finally:
        cluster.qpy_as("alice", "config", "notify", "none")
    assert re.fullmatch(rf"idle_warn {job} running 00:00:0\d  {node}", got[0]), got
    assert got[1:] == [f"end {job} killed   {node}"], got  # one warning, then the end


def test_the_admin_sees_sessions_again_after_restarting_the_multiuser(cluster):
    job = detached(cluster, "alice", "-m", "1")
    ready(cluster, "alice", job)

    def listed():
        sessions = cluster.status_json("alice").get("sessions") or []
        return [s for s in sessions if s["job"] == job and s["idle"] is not None]

    wait_for(listed, WAIT, "the session in the status")
    cluster.admin("finish")
    wait_for(lambda: not cluster.multiuser_pid(), WAIT, "the multiuser to stop")
    cluster.start_multiuser()
    entry, = wait_for(listed, WAIT, "the session in the status after the restart")
    assert entry["user"] == cluster.name("alice") and entry["node"] in ("n1", "n2", "n3")


def test_preempt_ends_an_idle_session_only_when_another_user_waits(cluster):
    policy(cluster, "idle_limit 2s\nidle_action preempt\n")
    job = detached(cluster, "alice", "-m", "1")
    ready(cluster, "alice", job)
    wait_for(lambda: session(cluster, "alice", job)["idle"] >= 4, WAIT, "4 s of idle time")
    assert cluster.job("alice", job)["status"] == "running"  # nobody waits: it stays
    bob = Jobs(cluster, "bob", cluster.workdir("bob", "preempt"))
    bob.subs(8, mem=1)  # 7 cores are free: one of bob's jobs waits
    record = wait_for(lambda: (r := cluster.job("alice", job))["status"] == "killed" and r,
                      WAIT, "the idle session to make room")
    assert record["reason"].startswith("idle ")
    bob.wait_started_count(8)  # the cores went back to the pool, and to bob
    bob.release_all()
    bob.wait_finished(*bob.ids)
