"""qpy connect on this machine: interactive sessions as jobs, driven through a real
terminal (an outer tmux, tests/terminal.py) with real tmux clients; the master, the
multiuser and the jobs are the real ones of the embedded default."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import shutil
import signal

import pytest
from conftest import (
    BIN,
    NODE,
    QPY,
    assert_one_line_error,
    job_processes,
    pid_alive,
    start_daemons,
    wait_for,
)
from terminal import Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
SHELL = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"  # the login shell of sessions


@pytest.fixture(autouse=True)
def own_home(qpy):
    """Sessions start login shells, which read the profile of HOME: a HOME of the test's
    own keeps the machine's dotfiles (and whatever they wait for) out of it."""
    home = qpy.root / "user-home"
    home.mkdir()
    qpy.env["HOME"] = str(home)


@pytest.fixture
def term(qpy):
    terminal = Terminal(qpy.root, {**qpy.env, "TERM": "xterm"})
    yield terminal
    terminal.close()


def sessions(qpy) -> list[dict]:
    data = json.loads(qpy.run("connect", "-l", "--json").stdout)
    assert data["version"] == 1
    return data["sessions"]


def session(qpy, job: int) -> dict:
    found = [s for s in sessions(qpy) if s["id"] == job]
    assert found, f"session {job} is not listed"
    return found[0]


def ready(qpy, job: int) -> dict:
    return wait_for(lambda: (s := session(qpy, job))["ready"] and s, what=f"session {job}")


def detached(qpy, *args: str) -> int:
    out = qpy.run("connect", "--detach", *args).stdout
    found = re.fullmatch(r"Job (\d+) received\.\n", out)
    assert found, out
    return int(found.group(1))


def attached_prompt(term: Terminal, name: str, marker: str) -> None:
    """Type a command whose output proves the shell of the session answers."""
    term.type(name, f"echo {marker}-$((6*7))")
    term.wait_screen(name, f"{marker}-42")


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def server_pid(qpy, job: int) -> int:
    """The PID of the session's tmux server, from the server itself."""
    import subprocess

    sock = session(qpy, job)["socket"]
    out = subprocess.run(["tmux", "-S", sock, "display-message", "-p", "#{pid}"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


# -- a session is a job ------------------------------------------------------------------------


def test_a_session_is_a_job_running_the_login_shell_in_the_submission_directory(qpy, term):
    term.run("a", [QPY, "connect", "-n", "1", "-m", "1"], qpy.work)
    term.type("a", 'echo "S:$QPY_JOB_ID:$QPY_N_CORES:$QPY_MEM:$PWD:$SHELL:${0##*/}"')
    term.wait_screen("a", f"S:1:1:1:{qpy.work}:{SHELL}:{os.path.basename(SHELL)}")
    if os.path.basename(SHELL) == "bash":  # started as a login shell
        term.type("a", "shopt -q login_shell && echo LOGIN-$((1+1))")
        term.wait_screen("a", "LOGIN-2")
    job = qpy.job(1)
    assert (job["status"], job["kind"], job["n_cores"], job["mem"]) == ("running", "tmux", 1, 1)
    assert job["command"] == "tmux session"
    term.type("a", "exit 3")
    assert term.wait_status("a") == 3  # qpy connect exits with the shell's status
    job = qpy.wait_status(1)
    assert (job["status"], job["exit_code"], job["signal"]) == ("done", 3, None)
    assert "Traceback" not in (qpy.home / "master.log").read_text()  # no thread died


def test_detach_and_reattach_from_another_shell_then_exit(qpy, term):
    term.run("a", [QPY, "connect"], qpy.work)
    attached_prompt(term, "a", "FIRST")
    wait_for(lambda: session(qpy, 1)["attached"] == 1, what="one client attached")
    term.send("a", "C-b", "d")
    assert term.wait_status("a") == 0  # detached: qpy connect exits 0, the job goes on
    wait_for(lambda: session(qpy, 1)["attached"] == 0, what="no client attached")
    assert qpy.job(1)["status"] == "running"
    term.run("b", [QPY, "connect", "1"], qpy.work)  # another shell, by ID
    term.wait_screen("b", "FIRST-42")  # the same session, its screen kept
    attached_prompt(term, "b", "SECOND")
    term.type("b", "exit 0")
    assert term.wait_status("b") == 0
    assert qpy.wait_status(1)["status"] == "done"


def test_new_makes_another_session_whose_run_history_keeps(qpy, term):
    assert detached(qpy) == 1
    term.run("a", [QPY, "connect", "--new"], qpy.work)  # not the one there is
    attached_prompt(term, "a", "NEW")
    term.type("a", "echo JOB=$QPY_JOB_ID; exit 3")
    assert term.wait_status("a") == 3
    job = qpy.wait_status(2)
    assert (job["status"], job["exit_code"], job["kind"]) == ("done", 3, "tmux")
    runs = json.loads(qpy.run("history", "2", "--json").stdout)["runs"]
    assert [(r["job"], r["status"], r["exit_code"]) for r in runs] == [(2, "done", 3)]
    assert qpy.job(1)["status"] == "running"


def test_kill_ends_an_attached_session_and_its_whole_tree(qpy, term):
    term.run("a", [QPY, "connect"], qpy.work)
    attached_prompt(term, "a", "UP")
    server = server_pid(qpy, 1)
    term.type("a", "sleep 1000 &")
    assert qpy.run("kill", "1").stdout == "1 job will be killed.\n"
    assert term.wait_status("a") == 128 + signal.SIGTERM
    assert "qpy: session 1 ended killed" in term.screen("a")
    job = qpy.wait_status(1)
    assert (job["status"], job["signal"]) == ("killed", signal.SIGTERM)
    wait_for(lambda: not pid_alive(server), what="the tmux server to end")
    assert not (qpy.home / "run" / NODE / "s1").exists()  # its directory is freed


def test_with_a_master_running_connect_attaches_without_the_full_command_line(qpy, term):
    """Served by the master up to the attach: the client waits and attaches with neither
    click nor multiprocessing loaded (they cost more than the rest of its way)."""
    start_daemons(qpy)
    imports = qpy.root / "imports.txt"
    python = os.path.join(os.path.dirname(QPY), "python")
    term.run("a", ["sh", "-c", 'exec "$0" -X importtime "$1" connect 2>"$2"', python, QPY,
                   str(imports)], qpy.work)
    attached_prompt(term, "a", "SERVED")
    term.type("a", "exit 4")
    assert term.wait_status("a") == 4
    imported = {line.split("|")[-1].strip() for line in imports.read_text().splitlines()
                if line.startswith("import time:")}
    assert {"qpy.front", "qpy.interactive"} <= imported
    assert not {"click", "multiprocessing", "qpy.cli", "qpy.ssh", "json"} & imported
    assert qpy.wait_status(1)["exit_code"] == 4


def test_without_a_terminal_connect_refuses_in_one_line_and_submits_nothing(qpy):
    proc = qpy.run("connect", check=False)  # stdin is /dev/null
    assert_one_line_error(proc, "qpy connect needs a terminal on stdin to attach (use "
                                "--detach to make a session without attaching)")
    assert proc.returncode == 1
    assert qpy.jobs() == []


# -- names, listing, several sessions ------------------------------------------------------------


def test_detach_names_list_json_and_idle_placeholder(qpy, term):
    assert detached(qpy, "--name", "dev") == 1
    proc = qpy.run("connect", "--detach", "--name", "dev", check=False)
    assert_one_line_error(proc, "a session named dev exists already (job 1): qpy connect "
                                "dev attaches to it")
    assert proc.returncode == 1
    proc = qpy.run("connect", "--detach", "--name", "123", check=False)
    assert_one_line_error(proc)
    assert proc.returncode == 2 and "not all digits" in proc.stderr
    assert detached(qpy, "-m", "3") == 2
    ready(qpy, 1), ready(qpy, 2)
    lines = qpy.run("connect", "-l").stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "NODE", "CORES", "MEM", "STATUS",
                                "ATTACHED", "IDLE"]
    assert lines[1].split()[:8] == ["1", "dev", "tmux", NODE, "1", "5", "running", "0"]
    assert lines[2].split()[:8] == ["2", "-", "tmux", NODE, "1", "3", "running", "0"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", line.split()[8]) for line in lines[1:])
    assert len(lines) == 3
    qpy.run("config", "checkFMT", r"%j %s %I\n")
    check = qpy.run("check").stdout.splitlines()
    assert re.fullmatch(r"1 running \d\d:\d\d:\d\d", check[0]), check
    # bare connect with two sessions: it lists them and asks for one
    term.run("a", [QPY, "connect"], qpy.work)
    assert term.wait_status("a") == 1
    screen = term.screen("a")
    assert "ID  NAME" in screen and "qpy: you have 2 sessions: name one" in screen
    term.run("b", [QPY, "connect", "dev"], qpy.work)  # by name
    attached_prompt(term, "b", "DEV")
    term.type("b", "echo JOB=$QPY_JOB_ID")
    term.wait_screen("b", "JOB=1")
    term.run("c", [QPY, "connect", "nosuch"], qpy.work)
    assert term.wait_status("c") == 3
    assert "qpy: no session nosuch is queued or running (qpy connect -l lists them)" \
        in term.screen("c")


def idle_since(qpy, job: int) -> float:
    """The session's idle_since of check --json (ISO 8601 in UTC), in seconds."""
    stamp = qpy.job(job)["idle_since"]
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_idle_time_grows_and_resets_on_input_and_on_cpu_use(qpy, term):
    job = detached(qpy)
    ready(qpy, job)
    wait_for(lambda: session(qpy, job)["idle"] >= 2.5, what="idle time to grow")
    before = session(qpy, job)["idle"]
    qpy.kill_daemon("master")
    assert session(qpy, job)["idle"] >= before  # kept across a restart of the master
    term.run("a", [QPY, "connect", str(job)], qpy.work)
    attached_prompt(term, "a", "ACTIVE")
    wait_for(lambda: session(qpy, job)["idle"] < 2.0, what="idle time to reset on input")
    since = idle_since(qpy, job)
    term.type("a", "yes > /dev/null")  # busy, without any input
    wait_for(lambda: idle_since(qpy, job) > since + 2.5,
             what="a busy session to stay active without input")
    term.send("a", "C-c")
    term.type("a", "exit 0")
    assert term.wait_status("a") == 0
    assert qpy.wait_status(job)["status"] == "done"


# -- the master comes and goes ---------------------------------------------------------------------


def test_master_sigkill_while_attached_and_while_detached(qpy, term):
    term.run("a", [QPY, "connect"], qpy.work)
    attached_prompt(term, "a", "BEFORE")
    qpy.kill_daemon("master")
    attached_prompt(term, "a", "WITHOUT-MASTER")  # the session does not need the master
    term.send("a", "C-b", "d")
    assert term.wait_status("a") == 0
    assert session(qpy, 1)["status"] == "running"  # a new master found it
    second = detached(qpy)
    ready(qpy, second)
    qpy.kill_daemon("master")
    term.run("b", [QPY, "connect", str(second)], qpy.work)  # starts a master, attaches
    attached_prompt(term, "b", "AFTER")
    qpy.kill_daemon("master")
    term.type("b", "exit 6")
    assert term.wait_status("b") == 6  # the exit code, through yet another master
    wait_for(lambda: not (qpy.home / "run" / NODE / f"s{second}").exists(),
             what="the directory of a session an earlier launcher started to be freed")
    term.run("c", [QPY, "connect", "1"], qpy.work)
    term.wait_screen("c", "WITHOUT-MASTER-42")
    term.type("c", "exit 5")
    assert term.wait_status("c") == 5
    assert (qpy.job(1)["exit_code"], qpy.job(second)["exit_code"]) == (5, 6)


# -- waiting for a slot ----------------------------------------------------------------------------


def test_the_wait_is_one_line_with_the_reason_and_ctrl_c_withdraws(qpy, term):
    qpy.run("ctrlQueue", "pause")
    term.run("a", [QPY, "connect"], qpy.work)
    term.wait_screen("a", "qpy: waiting for a slot: the queue is paused (qpy ctrlQueue "
                          "continue) (job 1)")
    term.send("a", "C-c")
    assert term.wait_status("a") == 130
    assert "qpy: session 1 withdrawn" in term.screen("a")
    assert qpy.job(1)["status"] == "undone"
    job = detached(qpy)  # queued: bare connect waits for it
    term.run("b", [QPY, "connect"], qpy.work)
    term.wait_screen("b", f"(job {job})")
    qpy.run("ctrlQueue", "continue")
    attached_prompt(term, "b", "STARTED")
    term.type("b", "exit 2")
    assert term.wait_status("b") == 2


# -- the node's state file is the user's ----------------------------------------------------------


def test_a_garbled_state_file_neither_stops_the_launcher_nor_the_master(qpy):
    job = detached(qpy)
    directory = ready(qpy, job)["dir"]
    run_dir = str(qpy.home / "run" / NODE).encode()
    launcher = [p for p in job_processes(qpy, lambda argv, env: argv[-1] == run_dir)
                if parent(p) == qpy.pid("master")]  # not its supervisors: they are forks
    assert len(launcher) == 1, launcher
    for text in ('{"since": "soon"}', '{"since": [1]}', "[1, 2]", "not json",
                 '{"ready": true, "since": 0, "display": "x", "attached": true, "socket": 5}'):
        tmp = os.path.join(directory, "state.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(directory, "state"))
    wait_for(lambda: session(qpy, job)["display"] is None, what="the last state, cleaned")
    listed = session(qpy, job)
    assert (listed["attached"], listed["socket"], listed["status"]) == (None, None, "running")
    second = detached(qpy)  # the same launcher still starts and watches sessions
    assert ready(qpy, second)["socket"]
    assert pid_alive(launcher[0])
    assert qpy.run("kill", str(job), str(second)).stdout == "2 jobs will be killed.\n"
    assert qpy.wait_status(job)["status"] == "killed"


def test_without_tmux_on_the_node_it_is_refused_in_one_line(qpy):
    proc = qpy.run("connect", "--detach", env={**qpy.env, "PATH": str(BIN)}, check=False)
    assert_one_line_error(proc, "tmux is not installed on this machine")
    assert proc.returncode == 1
    assert qpy.jobs() == []
