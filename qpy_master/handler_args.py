"""What the request handlers share: reading a selection, refusing what was removed, asking
the multiuser."""

from __future__ import annotations

from qpy import selection
from qpy.server import BadRequest, Denied, Unreachable
from qpy_master.multiuser_link import LinkDown


def selection_of(msg: dict) -> dict:
    """The request's selection, checked again (the master trusts no client)."""
    try:
        return selection.validate(msg.get("select", {}))
    except selection.SelectionError as exc:
        raise BadRequest(str(exc)) from None


def refuse_if_removed(m, what: str = "") -> None:
    """Denied, with the multiuser's reason, while it refuses this user. A fresh master
    first waits (10 s at most) for the multiuser's answer to its hello, which brings the
    nodes too (so a job no node could run is refused, and sessions get their limits)."""
    if not m.nodes:
        m.link.wait_settled(10.0)
    if m.link.refusal:
        raise Denied(f"{m.link.refusal}{what}")


def ask_multiuser(m, msg: dict, which: str = "the multiuser") -> dict:
    """The multiuser's reply to ``msg``; Unreachable, naming ``which`` multiuser, when it
    cannot answer or refuses."""
    try:
        reply = m.link.request(msg, timeout=10.0)
    except LinkDown as exc:
        raise Unreachable(f"{which} is not reachable: {exc}") from None
    if not reply.get("ok"):
        raise Unreachable(reply.get("error") or f"{which} refused the {msg['type']} request")
    return reply
