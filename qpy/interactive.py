"""``qpy connect`` on the user's side: which session, waiting for it, attaching to it.

Waiting and attaching run in the user's own process: they need the terminal, and Ctrl-C
while waiting. When the master runs, it serves the command up to there (which session,
making a new one: ``Invocation.served``) and hands the rest over to the client
(``HandOver``), which runs ``terminal`` from ``qpy/front.py`` without loading the rest
of the command line; so this module imports little until it shows a GUI or reaches a
node over ssh. Everything it knows of sessions comes from the master
(``qpy_master/session_requests.py``): the list, a new session, and waiting for one to be
ready or over, which blocks on an event in the master rather than polling.

Attaching is tmux's own client: ``tmux -S SOCKET attach`` on this machine, or the same at
the end of ``ssh -t NODE`` through the ssh configuration jobs use (``qpy.ssh``), riding on
the master's connection to the node. After the client returns, the same command asks
the server whether the session still exists: if it does, the user detached (exit 0); if
not, the session is over, and ``qpy connect`` exits with the job's recorded exit code.
GUIs go through xpra: ``xpra attach`` on this machine's display, over ssh for a node.
"""

from __future__ import annotations

import os

from qpy import trace
from qpy.errors import ClientError, retried
from qpy.invocation import current

TYPE_CHECKING = False  # typing is not imported: this module is on the way to the prompt
if TYPE_CHECKING:
    import subprocess

# tmux attach, then: is the server still there? (0: detached; 100: the session is over;
# 101: attaching failed, the session goes on)
ATTACH = ('"$1" -S "$2" attach; s=$?; "$1" -S "$2" has-session 2>/dev/null || exit 100; '
          '[ $s = 0 ] || exit 101')
DETACHED, ENDED, NOT_ATTACHED = 0, 100, 101
INTERRUPTED = 130  # the exit status after Ctrl-C while waiting
FIRST_WAIT = 1.0  # seconds before a queued session says why it waits
RETRY_FOR = 10.0  # seconds a request that finds no master is asked again (see ask)


def err(text: str) -> None:
    stream = current().err
    stream.write(f"qpy: {text}\n")
    stream.flush()


def ask(msg: dict) -> dict:
    """One request to the master, asked again for up to RETRY_FOR seconds while it cannot be
    reached (it may be restarting: the next request starts one). Shorter than ``qpy
    wait``'s minute: a restart takes well under a second, and a user at the prompt is to be
    told within seconds when no master can start (the 2 s of the five tries this replaced
    were enough for every restart the tests make)."""
    return retried(current().request, msg, RETRY_FOR)


def label(session: dict) -> str:
    return f"session {session['id']}" + (f" ({session['name']})" if session["name"] else "")


def which(program: str) -> str | None:
    """``program`` on the command's PATH (shutil's which costs more to import)."""
    for directory in current().env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def exit_with(code: int) -> None:
    import click

    raise click.exceptions.Exit(code)


# -- waiting ---------------------------------------------------------------------------------


def wait(job: int, until: str, created: bool) -> dict | None:
    """The session once it is ready (``until`` "ready") or over. While it is queued, one
    line says why; Ctrl-C withdraws a session this command made (it becomes undone), and
    then there is none."""
    said = None
    try:
        timeout = FIRST_WAIT  # a session that starts at once prints no waiting line
        while True:
            session = ask({"type": "session_wait", "job": job, "until": until,
                           "timeout": timeout})["session"]
            timeout = 30.0
            if session["status"] == "queue" and session["waiting"] != said:
                said = session["waiting"]
                err(f"waiting for a slot: {said} (job {job})")
            elif session["status"] not in ("queue", "running") or (
                    until == "ready" and session["ready"]):
                return session
    except KeyboardInterrupt:
        if created:
            ask({"type": "kill", "select": {"ids": [job], "ranges": [], "statuses": [],
                                            "dirs": [], "all": False}})
            err(f"session {job} withdrawn")
        else:
            err(f"stopped waiting; session {job} stays in the queue")
        return None
    raise AssertionError("unreachable")


def ended(session: dict, started: bool = True) -> int:
    """The exit status of ``qpy connect`` for a session that is over; one line says how
    it ended unless its shell simply exited while attached (``started``)."""
    if started and session["status"] == "done" and session["exit_code"] is not None:
        return session["exit_code"]
    why = f": {session['reason']}" if session["reason"] else ""
    when = "" if started else " before it was ready"
    err(f"{label(session)} ended {session['status']}{when}{why}")
    if session["status"] == "done" and session["exit_code"] is not None:
        return session["exit_code"]
    return 128 + session["signal"] if session["signal"] else 1


# -- attaching -------------------------------------------------------------------------------


def terminal(session: dict, created: bool) -> int:
    """Wait for a tmux session to be ready and attach this terminal to it: the exit
    status of qpy connect."""
    ready = wait(session["id"], "ready", created)
    trace.mark("connect: ready")
    if ready is None:
        return INTERRUPTED
    if not ready["ready"]:
        return ended(ready, started=False)
    return attach(ready)


def run_here(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` (an absolute path) on this terminal to its end: its exit status, as
    subprocess's (negative: the signal that ended it). Ctrl-C is the child's alone."""
    import _signal  # signal itself imports enum

    old = _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    try:
        pid = os.posix_spawn(argv[0], argv, env, setsigdef=(_signal.SIGINT,))
        _, status = os.waitpid(pid, 0)
    finally:
        _signal.signal(_signal.SIGINT, old)
    return os.waitstatus_to_exitcode(status)


def terminal_env() -> dict[str, str]:
    """This environment without tmux's own variables: attaching from inside one's own
    tmux is allowed (detach from the inner one with the prefix pressed twice)."""
    return {k: v for k, v in current().env.items() if k not in ("TMUX", "TMUX_PANE")}


def attach(session: dict) -> int:
    """Attach this terminal to a ready tmux session; the exit status of qpy connect."""
    if session["local"]:
        tmux = which("tmux")
        if tmux is None:
            raise ClientError("tmux is not installed on this host: it is needed to attach")
        argv = ["/bin/sh", "-c", ATTACH, "sh", tmux, session["socket"]]
    elif session.get("attach"):
        argv = session["attach"]  # ssh -t to the node, as the master reaches it
    else:
        raise ClientError(f"{label(session)} on {session['node']} cannot be reached from "
                          "here: no ssh client (see the master's log)")
    gui = background_gui(session)
    trace.mark("connect: attaching")
    try:
        code = run_here(argv, terminal_env())
    finally:
        if gui is not None:
            gui.terminate()
    if code == DETACHED:
        return 0
    if code == ENDED:
        over = wait(session["id"], "end", False)
        return INTERRUPTED if over is None else ended(over)
    now = ask({"type": "session_wait", "job": session["id"], "until": "end",
               "timeout": 0.0})["session"]
    if now["status"] not in ("queue", "running"):
        return ended(now)
    err(f"the terminal lost {label(session)} on {session['node']} (status {code}); it goes "
        f"on: qpy connect {session['id']}")
    return 1


# -- xpra ------------------------------------------------------------------------------------


def check_gui_host(attaching: bool) -> str:
    """xpra on this host, and a display to attach to: one line naming what is missing."""
    xpra = which("xpra")
    if xpra is None:
        raise ClientError("xpra is not installed on this host: --gui needs it to show the "
                          "program's windows here")
    if attaching and not current().env.get("DISPLAY"):
        raise ClientError("there is no display to attach to: DISPLAY is not set (use "
                          "--detach, then qpy connect --gui-attach ID where there is one)")
    return xpra


def xpra_argv(session: dict, xpra: str) -> list[str]:
    from qpy import paths, ssh

    if session["display"] is None or not session["dir"]:
        raise ClientError(f"{label(session)} has no GUI display"
                          + (f": xpra is not installed on {session['node']}"
                             if session["xpra"] == "missing" else ""))
    options = [f"--socket-dir={session['dir']}", "--tray=no"]
    if session["local"]:
        return [xpra, "attach", f":{session['display']}", *options]
    address = session["address"] or session["node"]
    ssh_argv = ssh.terminal_command(address, [], paths.qpy_home())[:-2]
    return [xpra, "attach", f"ssh://{address}/{session['display']}",
            f"--ssh={' '.join(a for a in ssh_argv if a != '-t')}", *options]


def gui_attach(session: dict) -> int:
    """Show a session's xpra display here until xpra attach ends: when the program ends
    (qpy connect exits with its status), or on Ctrl-C (the session goes on, exit 0)."""
    import subprocess

    from qpy import paths

    argv = xpra_argv(session, check_gui_host(True))
    log = os.path.join(paths.qpy_home(), f"xpra-attach-{session['id']}.log")
    try:
        with open(log, "w") as out:
            code = subprocess.call(argv, env=current().env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out)
    except KeyboardInterrupt:
        return 0
    now = ask({"type": "session_wait", "job": session["id"], "until": "end",
               "timeout": 5.0 if session["kind"] == "gui" else 0.0})["session"]
    if now["status"] not in ("queue", "running"):
        return ended(now)
    if code != 0:
        err(f"xpra attach ended with status {code}; {label(session)} goes on (see {log})")
        return 1
    return 0


def background_gui(session: dict) -> subprocess.Popen | None:
    """While attached to a tmux session that has a display, its windows show here too
    (as qconnect did), if this host has xpra and a display; a line says what is missing
    when the user has a display but the GUI cannot be shown."""
    if not current().env.get("DISPLAY") or session["kind"] != "tmux":
        return None
    xpra = which("xpra")
    if xpra is None or session["display"] is None:
        missing = ("this host" if xpra is None else session["node"])
        err(f"GUI programs of {label(session)} cannot show here: xpra is not installed on "
            f"{missing}")
        return None
    import subprocess

    return subprocess.Popen(xpra_argv(session, xpra), env=current().env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


# -- listing ---------------------------------------------------------------------------------


def listing(sessions: list[dict], as_json: bool) -> str:
    """``qpy connect -l``: a header and one line per queued or running session."""
    if as_json:
        from qpy import jsonout

        return jsonout.document(sessions=sessions)
    from qpy.render import idle_text

    rows = [("ID", "NAME", "KIND", "NODE", "CORES", "MEM", "STATUS", "ATTACHED", "IDLE")]
    for s in sessions:
        rows.append((str(s["id"]), s["name"] or "-", s["kind"], s["node"] or "-",
                     str(s["n_cores"]), f"{s['mem']:g}", s["status"],
                     "-" if s["attached"] is None else str(s["attached"]),
                     "-" if s["idle"] is None else idle_text(s["idle"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in rows)


def needs_terminal() -> None:
    if not current().tty_in:
        raise ClientError("qpy connect needs a terminal on stdin to attach (use --detach "
                          "to make a session without attaching)")
