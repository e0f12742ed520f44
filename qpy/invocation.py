"""Where one ``qpy`` command runs: its directory, environment, terminal and master.

A command runs either in the ``qpy`` process itself or, when the user's master already
runs, inside the master (the command server, ``qpy/front.py``): the master has click and
everything else imported, so a command costs the client little more than starting
Python. Commands therefore never read ``os.getcwd()``, ``os.environ`` or ``sys.stdout``
themselves; they take them from the current ``Invocation``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO


class RunLocally(Exception):  # noqa: N818 - a signal to the command server, not an error
    """The command needs the user's own process (a terminal, stdin, the master itself);
    raised before it has done anything, so the client may run it again by itself."""


@dataclass
class Invocation:
    """What a command may use of the world it was typed in. ``where`` is the working
    directory (None: this process's, looked up only when a command needs it, so a
    command typed in a removed directory still works if it does not)."""

    where: str | None
    env: dict[str, str]
    out: TextIO
    err: TextIO
    tty: bool  # standard output is a terminal (colours)
    request: Callable[..., dict]  # one request to the master: msg -> reply, or ClientError
    served: bool = False  # running inside the master (nothing local is at hand)
    umask: int | None = None  # the submitter's, for the job and its output files
    stdin: TextIO | None = None  # this process's only (sub --file -, after local_only)

    @property
    def cwd(self) -> str:
        return self.where if self.where is not None else os.getcwd()

    def local_only(self) -> None:
        """Stop here if the command runs in the master: the client will run it."""
        if self.served:
            raise RunLocally()


_current: contextvars.ContextVar[Invocation] = contextvars.ContextVar("invocation")


def current() -> Invocation:
    """The invocation of the command running in this thread (the local one by default)."""
    try:
        return _current.get()
    except LookupError:
        inv = local()
        _current.set(inv)
        return inv


def local() -> Invocation:
    """This process's own directory, environment and standard streams."""
    from qpy.client import request

    umask = os.umask(0o022)
    os.umask(umask)
    return Invocation(None, dict(os.environ), sys.stdout, sys.stderr, sys.stdout.isatty(),
                      request, umask=umask, stdin=sys.stdin)


@contextlib.contextmanager
def using(inv: Invocation) -> Iterator[Invocation]:
    """Run the commands of this thread in ``inv``."""
    token = _current.set(inv)
    try:
        yield inv
    finally:
        _current.reset(token)
