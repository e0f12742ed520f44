"""What the commands share: context settings, errors, output and selections."""

from __future__ import annotations

from qpy.client import ClientError
from qpy.invocation import current

CONTEXT = {"help_option_names": ["-h", "--help"]}


def fail(text: str) -> None:
    """Refuse bad input from the command line (exit status 2, as click's usage errors)."""
    raise ClientError(text, "bad_request")


def echo(text: str) -> None:
    """Write to the command's standard output."""
    current().out.write(text)


def say(reply: dict) -> None:
    """The text a reply carries for the user."""
    echo(reply.get("text", ""))


def request(msg: dict, **options: object) -> dict:
    """One request to the master; an error reply raises ClientError."""
    return current().request(msg, **options)


def parse_selection(args: tuple[str, ...], statuses: tuple[str, ...], what: str,
                    allow_dirs: bool = True) -> dict:
    """Job IDs, ranges, statuses, directories or 'all' as a selection for the master."""
    if not args:
        fail(f"{what} needs job IDs, ranges, a status or 'all'")
    from qpy import selection

    try:
        return selection.parse(list(args), statuses, allow_all=True, allow_dirs=allow_dirs,
                               cwd=current().cwd)
    except selection.SelectionError as exc:
        fail(str(exc))


def parse_id(text: str, what: str) -> int:
    """One job ID from the command line; bad input names it."""
    from qpy import selection

    if not text.isdigit():
        fail(f"{what} takes a job ID, not {text!r}")
    try:
        return selection.job_id(text)
    except selection.SelectionError as exc:
        fail(str(exc))
