"""qpy connect --gui: programs under xpra on a display of the job's own, shown with xpra
attach on a virtual display standing for the user's, and gone with the job; the one-line
errors when xpra or a display is missing. Real xpra, Xvfb and xmessage (Debian packages
xpra, xvfb, x11-utils), run by the embedded default on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from conftest import BIN, QPY, assert_one_line_error, job_processes, pid_alive, wait_for
from terminal import Terminal
from test_connect import own_home, ready  # noqa: F401 (own_home: an autouse fixture)

TOOLS = ("tmux", "xpra", "Xvfb", "xmessage", "xwininfo")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]


@pytest.fixture(autouse=True)
def _tools():
    if MISSING:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so not skipping: {MISSING} not installed", pytrace=False)
        pytest.skip(f"{', '.join(MISSING)} not installed (Debian: xpra xvfb x11-utils)")


@pytest.fixture
def term(qpy):
    terminal = Terminal(qpy.root, {**qpy.env, "TERM": "xterm"})
    yield terminal
    terminal.close()


@pytest.fixture
def user_display():
    """A virtual X display standing for the user's own screen on the login host."""
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    number = int(proc.stdout.readline())
    yield number
    proc.terminate()
    proc.wait(30)


def x_server(display: int) -> int | None:
    """The PID of the X server holding ``display``, from its lock file."""
    try:
        with open(f"/tmp/.X{display}-lock") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def windows(display: int) -> str:
    return subprocess.run(["xwininfo", "-display", f":{display}", "-root", "-tree"],
                          capture_output=True, text=True).stdout


def gui(qpy, *argv: str) -> int:
    out = qpy.run("connect", "--gui", "--detach", *argv).stdout
    assert out.startswith("Job ") and out.endswith(" received.\n"), out
    return int(out.split()[1])


def test_the_program_runs_under_xpra_on_a_display_of_its_own_and_ends_with_the_job(qpy):
    first, second = gui(qpy, "xmessage", "first"), gui(qpy, "xmessage", "second")
    one, two = ready(qpy, first), ready(qpy, second)
    assert one["kind"] == "gui" and one["display"] != two["display"]  # no clash
    display = one["display"]
    server = wait_for(lambda: x_server(display), what=f"the X server of :{display}")
    xpra = job_processes(qpy, lambda argv, env: any(b"xpra" in a for a in argv[:2])
                         and f":{display}".encode() in argv)
    program = job_processes(qpy, lambda argv, env: argv[:1] == [b"xmessage"]
                            and f"DISPLAY=:{display}".encode() in env)
    assert xpra and program, (xpra, program)
    wait_for(lambda: "xmessage" in windows(display), what="the program's window on its display")
    assert qpy.run("kill", str(first)).stdout == "1 job will be killed.\n"
    assert qpy.wait_status(first)["status"] == "killed"
    wait_for(lambda: not any(pid_alive(p) for p in (server, *xpra, *program)),
             what="xpra, its X server and the program to be gone")
    assert not os.path.exists(f"/tmp/.X{display}-lock")
    assert qpy.job(second)["status"] == "running"  # the other session is untouched


def test_the_session_ends_with_its_program_and_keeps_its_exit_status(qpy):
    job = gui(qpy, "sh", "-c", "xmessage -timeout 1 bye; exit 7")
    record = qpy.wait_status(job, timeout=120)
    assert (record["status"], record["exit_code"]) == ("done", 7)


def test_gui_attach_shows_the_program_on_the_users_display(qpy, term, user_display):
    term.run("a", [QPY, "connect", "--gui", "xmessage", "shown-here"], qpy.work,
             env={"DISPLAY": f":{user_display}"})
    wait_for(lambda: "xmessage" in windows(user_display), 120,
             "the program's window on the user's display")
    term.send("a", "C-c")  # stops showing it; the session goes on
    assert term.wait_status("a") == 0
    wait_for(lambda: "xmessage" not in windows(user_display), what="the window to go")
    job = qpy.jobs()[0]
    assert job["status"] == "running"
    term.run("b", [QPY, "connect", "--gui-attach", str(job["id"])], qpy.work,
             env={"DISPLAY": f":{user_display}"})
    wait_for(lambda: "xmessage" in windows(user_display), 120, "the window shown again")
    qpy.run("kill", str(job["id"]))
    assert term.wait_status("b") == 128 + signal.SIGTERM  # the session ended while shown


def test_without_xpra_or_without_a_display_it_fails_in_one_line_before_submitting(qpy):
    no_xpra = {**qpy.env, "PATH": str(BIN)}
    proc = qpy.run("connect", "--gui", "xmessage", "hi", env=no_xpra, check=False)
    assert_one_line_error(proc, "xpra is not installed on this host: --gui needs it to show "
                                "the program's windows here")
    no_display = {k: v for k, v in qpy.env.items() if k != "DISPLAY"}
    proc = qpy.run("connect", "--gui", "xmessage", "hi", env=no_display, check=False)
    assert_one_line_error(proc, "there is no display to attach to: DISPLAY is not set (use "
                                "--detach, then qpy connect --gui-attach ID where there is one)")
    assert qpy.jobs() == []  # nothing was submitted


def test_a_tmux_session_gets_a_display_and_says_when_gui_programs_cannot_show(qpy, term,
                                                                              user_display):
    job = int(qpy.run("connect", "--detach").stdout.split()[1])
    session = ready(qpy, job)
    assert session["display"] is not None and session["xpra"] == "ok"
    no_xpra = str(qpy.root / "bin")
    os.mkdir(no_xpra)
    for tool in ("tmux", "sh"):
        os.symlink(shutil.which(tool), os.path.join(no_xpra, tool))
    term.run("a", [QPY, "connect", str(job)], qpy.work,
             env={"DISPLAY": f":{user_display}", "PATH": f"{BIN}:{no_xpra}"})
    term.type("a", "echo IN-$DISPLAY")
    term.wait_screen("a", f"IN-:{session['display']}")  # DISPLAY is set in the session
    term.send("a", "C-b", "d")
    assert term.wait_status("a") == 0
    assert f"qpy: GUI programs of session {job} cannot show here: xpra is not installed " \
        "on this host" in term.screen("a")
