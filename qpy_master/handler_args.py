"""What the request handlers share: reading a selection, counting jobs in a reply."""

from __future__ import annotations

from qpy import selection
from qpy.server import BadRequest, Denied


def plural(n: int, word: str = "job") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def selection_of(msg: dict) -> dict:
    """The request's selection, checked again (the master trusts no client)."""
    try:
        return selection.validate(msg.get("select", {}))
    except selection.SelectionError as exc:
        raise BadRequest(str(exc)) from None


def refuse_if_removed(m, what: str = "") -> None:
    """Denied, with the multiuser's reason, while it refuses this user."""
    if m.link.refusal:
        raise Denied(f"{m.link.refusal}{what}")
