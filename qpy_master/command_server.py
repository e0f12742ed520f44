"""The master's side of ``qpy/front.py``: run a user's command line here, in this process.

The command runs through the same click commands as in the ``qpy`` process
(``qpy.cli.execute``), in an Invocation made of what the client sent: its directory,
environment, umask and whether its stdout is a terminal. Its requests are answered
in-process by the request table (``qpy.server.answer``), with the same checks as on the
wire. Output is sent back in the final reply, or as ``output`` events while a command
that flushes (one that waits) is still running. A command that needs the user's own
process raises RunLocally before doing anything, and the client runs it itself; one
whose end needs it (``qpy connect`` attaching) raises HandOver with what the client needs
to go on, which the reply carries.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable

from qpy.client import ClientError
from qpy.invocation import HandOver, Invocation, RunLocally
from qpy.server import Handler, Session, answer

log = logging.getLogger("qpy.master.commands")


class _Stream(io.TextIOBase):
    """A command's stdout or stderr: kept until the reply, or sent early on flush. Kept
    as a list of the pieces written: a StringIO emptied for reuse turns into a buffer of
    4-byte characters, which made the 10 MB of ``qpy history``'s 100,000 runs cost
    some 50 ms more to write and read back."""

    def __init__(self, session: Session, name: str) -> None:
        super().__init__()
        self.session, self.name = session, name
        self.parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        text = self.take()
        if text:
            self.session.post({"type": "output", self.name: text})

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


def _asker(table: dict[str, Handler], session: Session):
    """``request`` for commands run here: the request table, without a socket."""

    def ask(msg: dict, **_: object) -> dict:
        reply, _after = answer(table, session, msg)
        if not reply.get("ok"):
            raise ClientError(reply.get("error") or "refused", str(reply.get("code")))
        return reply

    return ask


def serve(table: dict[str, Handler], session: Session, msg: dict,
          notices: Callable[[], list[str]] | None = None) -> dict:
    """The ``cli`` request: the command's exit status and output, or ``local``. Lines
    waiting for the user (``notices``: an idle session's warning) end its stderr."""
    from qpy import cli

    out, err = _Stream(session, "out"), _Stream(session, "err")
    inv = Invocation(msg["cwd"], msg["env"], out, err, msg["tty"], _asker(table, session),
                     served=True, umask=msg.get("umask"), tty_in=bool(msg.get("tty_in")))
    then: dict = {}
    try:
        code = cli.execute(msg["argv"], inv)
    except RunLocally:
        return {"local": True}
    except HandOver as exc:  # the client goes on (qpy connect attaches its terminal)
        code, then = 0, exc.then
    except Exception as exc:  # a bug in a command: say so, do not run it a second time
        log.exception("command %s failed", msg["argv"][:1])
        err.write(f"qpy: internal error: {type(exc).__name__}: {exc}\n")
        code = 1
    if notices is not None:
        err.write("".join(f"qpy: {line}\n" for line in notices()))
    return {"exit": code, "out": out.take(), "err": err.take(), **then}


def preload() -> None:
    """Import the command line now, in the background, so the first command served does
    not pay for it."""

    def load() -> None:
        from qpy import cli  # noqa: F401

    threading.Thread(target=load, name="preload-cli", daemon=True).start()
