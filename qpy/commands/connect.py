"""Interactive sessions on the nodes: connect (the user's side is ``qpy/interactive.py``)."""

from __future__ import annotations

import click

from qpy import trace
from qpy.client import ClientError
from qpy.commands.common import CONTEXT, echo, fail, request
from qpy.invocation import HandOver, current


def _create(n_cores: str | None, mem: str | None, attr: str | None, name: str | None,
            gui: list[str] | None) -> dict:
    """A new interactive job (the master checks it again, and against the admin's limits)."""
    from qpy import jobspec
    from qpy.defaults import DEFAULT_CORES, DEFAULT_MEM

    try:
        cores = jobspec.parse_cores(n_cores) if n_cores is not None else DEFAULT_CORES
        memory = jobspec.parse_mem(mem) if mem is not None else DEFAULT_MEM
        expr = jobspec.parse_attr(attr)
    except jobspec.SpecError as exc:
        fail(str(exc))
    inv = current()
    return request({"type": "connect", "cwd": inv.cwd, "env": inv.env, "n_cores": cores,
                    "mem": memory, "attr": expr, "name": name, "gui": gui,
                    "umask": inv.umask})


def _find(sessions: list[dict], word: str) -> dict:
    for session in sessions:
        if str(session["id"]) == word or session["name"] == word:
            return session
    raise ClientError(f"no session {word} is queued or running (qpy connect -l lists them)",
                      "not_found")


def _sessions() -> list[dict]:
    from qpy import interactive

    reply = request({"type": "sessions"})
    for notice in reply["notices"]:
        interactive.err(notice)
    return reply["sessions"]


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("-n", "--cores", "n_cores", metavar="N", help="Cores of a new session (default 1).")
@click.option("-m", "--mem", "--memory", "mem", metavar="GB",
              help="Memory of a new session in GB (default 5).")
@click.option("-a", "--node_attr", "--attributes", "attr", metavar="EXPR",
              help="Node attributes of a new session: names with and/or/not and parentheses.")
@click.option("--name", metavar="NAME", help="The session named NAME: attach, or make it.")
@click.option("--new", "new", is_flag=True, help="Make a new session even if you have one.")
@click.option("--detach", is_flag=True,
              help="Make a new session without attaching; print its job ID.")
@click.option("-l", "--list", "listing", is_flag=True, help="List your sessions.")
@click.option("--json", "as_json", is_flag=True, help="With -l: the sessions as JSON.")
@click.option("--gui", is_flag=True,
              help="Run PROGRAM [ARGS]... (the arguments) under xpra on a node and show it.")
@click.option("--gui-attach", "gui_attach", metavar="ID",
              help="Show the GUI of session ID here (xpra attach).")
@click.argument("target", nargs=-1, type=click.UNPROCESSED, metavar="[ID|NAME]")
def connect(n_cores: str | None, mem: str | None, attr: str | None, name: str | None,
            new: bool, detach: bool, listing: bool, as_json: bool, gui: bool,
            gui_attach: str | None, target: tuple[str, ...]) -> None:
    """Open a tmux session on a node and attach to it, or attach to one you have."""
    from qpy import interactive

    if as_json and not listing:
        fail("--json goes with -l")
    if listing:
        echo(interactive.listing(_sessions(), as_json))
        return
    if gui_attach is not None:
        current().local_only()  # the user's display, and Ctrl-C
        interactive.exit_with(interactive.gui_attach(_find(_sessions(), gui_attach)))
    if gui:
        if not target:
            fail("--gui needs a PROGRAM to run")
        if not detach:
            current().local_only()  # the user's display, and Ctrl-C while waiting
        interactive.check_gui_host(not detach)
        session = _create(n_cores, mem, attr, name, list(target))["session"]
        if detach:
            echo(f"Job {session['id']} received.\n")
            return
        session = interactive.wait(session["id"], "ready", True)
        if session is None:
            interactive.exit_with(interactive.INTERRUPTED)
        if not session["ready"]:
            interactive.exit_with(interactive.ended(session, started=False))
        interactive.exit_with(interactive.gui_attach(session))
    _tmux(n_cores, mem, attr, name, new, detach, target)


def _tmux(n_cores: str | None, mem: str | None, attr: str | None, name: str | None,
          new: bool, detach: bool, target: tuple[str, ...]) -> None:
    """Attach to the tmux session the user names or has, or make one. Served by the
    master, it hands over to the client once it knows the session: waiting for it and
    attaching need the user's terminal (``interactive.terminal``)."""
    from qpy import interactive

    if len(target) > 1:
        fail("connect takes one session ID or NAME (--gui runs a program with arguments)")
    if detach:
        echo(_create(n_cores, mem, attr, name, None)["text"])
        return
    interactive.needs_terminal()
    sessions = [s for s in _sessions() if s["kind"] == "tmux" or target]
    session = None
    if target:
        session = _find(sessions, target[0])
    elif not new and name is not None:
        session = next((s for s in sessions if s["name"] == name), None)
    elif not new and len(sessions) > 1:
        echo(interactive.listing(sessions, False))
        raise ClientError(f"you have {len(sessions)} sessions: name one (qpy connect ID or "
                          "NAME), or make another with --new")
    elif not new and sessions:
        session = sessions[0]
    if session is not None and (n_cores or mem or attr):
        fail(f"-n, -m and -a are for a new session, and {interactive.label(session)} exists "
             "(--new makes another)")
    if session is not None and session["kind"] != "tmux":
        raise ClientError(f"{interactive.label(session)} runs a GUI program: qpy connect "
                          f"--gui-attach {session['id']} shows it")
    created = session is None
    trace.mark("connect: sessions listed")
    if created:
        session = _create(n_cores, mem, attr, name, None)["session"]
        trace.mark("connect: created")
    if current().served:
        raise HandOver({"attach": session, "created": created})
    interactive.exit_with(interactive.terminal(session, created))
