"""``qpy-access-multiuser.py`` / ``qpy-admin``: the admin's commands to the multiuser.

Every command except ``start`` is one request authenticated with the admin key
(``$QPY_ADMIN_HOME/admin.key``); users do not have that key, so they cannot run these.
"""

from __future__ import annotations

import os
import sys
import time

import click

from qpy import paths, wire
from qpy.client import connect_bundle

HIDDEN = ("__user", "__req_core", "__remove_job")


class AdminError(click.ClickException):
    """One line for the admin; the exit status tells the kind of failure, as for qpy."""

    def __init__(self, text: str, code: str = "refused") -> None:
        super().__init__(text)
        self.exit_code = wire.EXIT_STATUS.get(code, 1)

    def format_message(self) -> str:
        return self.message


def _home() -> str:
    return paths.admin_home()


def call(command: str, args: list[str]) -> dict:
    """One admin request; an error reply becomes a one-line failure."""
    home = _home()
    try:
        conn = connect_bundle(home, "@admin", os.path.join(home, "admin.key"))
    except (OSError, EOFError, ValueError) as exc:
        raise AdminError(f"cannot reach the multiuser ({exc}); is it running? "
                         "Start it with 'qpy-admin start'", "unreachable") from None
    try:
        return wire.exchange(conn, {"type": "admin", "command": command, "args": args}, 60,
                             "the multiuser")
    except wire.Refused as exc:
        raise AdminError(str(exc), exc.code) from None


def say(reply: dict) -> None:
    sys.stdout.write(reply.get("text", ""))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def admin() -> None:
    """Administer the qpy multiuser (needs the admin key)."""


@admin.command()
def start() -> None:
    """Start the multiuser in the background."""
    from qpy.spawn import SpawnError, spawn_daemon

    home = paths.ensure_private_dir(_home())
    try:
        status = spawn_daemon("qpy_multiuser", os.path.join(home, "multiuser.log"))
    except SpawnError as exc:
        raise AdminError(str(exc)) from None
    if status == "busy":
        raise AdminError("a multiuser is already running for this admin home")
    if status != "ok":
        raise AdminError(f"the multiuser could not start: {status}")
    print("Starting qpy-multiuser driver.")


def _simple(name: str, doc: str) -> None:
    @admin.command(name=name, help=doc)
    def command() -> None:
        say(call(name, []))


@admin.command()
def finish() -> None:
    """Stop the multiuser (running jobs go on); returns when it has exited."""
    import fcntl

    say(call("finish", []))
    with open(os.path.join(_home(), "multiuser.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held by the multiuser until its process ends


for _name, _doc in (("nodes", "Reload the nodes file."),
                    ("distribute", "Reload allowed_users and distribution_rules; reshare."),
                    ("variables", "Show the multiuser's internal state."),
                    ("status", "Show users, nodes and cores.")):
    _simple(_name, _doc)


@admin.command(name="saveMessages")
@click.argument("value", type=click.Choice(["true", "false"]))
def save_messages(value: str) -> None:
    """Keep debugging messages (shown by 'variables')."""
    say(call("saveMessages", [value]))


def _seconds(text: str) -> float:
    """``24h``, ``30m``, ``90s``, ``2d``, or hours as a plain number."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "h")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise AdminError(f"--valid takes a duration like 24h, 30m or 2d, not {text!r}",
                         "bad_request") from None
    return value


@admin.command()
@click.argument("user")
@click.option("--valid", default="24h", show_default=True,
              help="How long the enrolment code works (s, m, h or d).")
@click.option("--out", "out_dir", default=None,
              help="Write the key bundle into this directory instead of printing a code.")
def adduser(user: str, valid: str, out_dir: str | None) -> None:
    """Allow USER and print a one-time enrolment code for 'qpy join'."""
    if out_dir is not None:
        reply = call("adduser", [user])
        paths.ensure_private_dir(out_dir)
        for name, value in reply["bundle"].items():
            paths.write_private(os.path.join(out_dir, name), value + "\n")
        say(reply)
        print(f"Key bundle written to {out_dir}/ (mode 0600). Give it to {user} privately; "
              f"{user} puts the three files into ~/.qpy/ (mode 0700, the files 0600) and "
              "runs 'qpy restart'.")
        return
    seconds = _seconds(valid)
    reply = call("enrol", [user, repr(seconds)])
    say(reply)
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + seconds))
    print(f"Enrolment code for {user} (works once, until {until}): {reply['code']}\n"
          f"Tell it to {user} privately; {user} runs, on this host: qpy join {reply['code']}")


@admin.command()
@click.argument("user")
def removeuser(user: str) -> None:
    """Withdraw USER's access; their key stops working at once."""
    say(call("removeuser", [user]))


for _hidden in HIDDEN:
    @admin.command(name=_hidden, hidden=True, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1)
    def repair(args: tuple[str, ...], _name: str = _hidden) -> None:
        say(call(_name, list(args)))


def main() -> None:
    try:
        admin.main(prog_name=os.path.basename(sys.argv[0]), standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        sys.stderr.write(f"qpy-admin: {' '.join(exc.format_message().split())}\n")
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)
