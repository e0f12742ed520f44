"""Where one ``qpy`` command runs: its directory, environment, terminal and master.

A command runs either in the ``qpy`` process itself or, when the user's master already
runs, inside the master (the command server, ``qpy/front.py``): the master has click and
everything else imported, so a command costs the client little more than starting
Python. Commands therefore never read ``os.getcwd()``, ``os.environ`` or ``sys.stdout``
themselves; they take them from the current ``Invocation``.

Light to import (no dataclasses, typing or contextlib): the front's path that attaches
``qpy connect`` to its session uses it without the rest of the command line.
"""

from __future__ import annotations

import contextvars
import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: it is not needed at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO


class RunLocally(Exception):  # noqa: N818 - a signal to the command server, not an error
    """The command needs the user's own process (a terminal, stdin, the master itself);
    raised before it has done anything, so the client may run it again by itself."""


class HandOver(Exception):  # noqa: N818 - a signal to the command server, not an error
    """The rest of a served command needs the user's own process: the client goes on
    from what the command did in the master (``then``: fields of the ``cli`` reply)."""

    def __init__(self, then: dict) -> None:
        super().__init__("handed over to the client")
        self.then = then


class Invocation:
    """What a command may use of the world it was typed in. ``where`` is the working
    directory (None: this process's, looked up only when a command needs it, so a
    command typed in a removed directory still works if it does not)."""

    def __init__(self, where: str | None, env: dict[str, str], out: TextIO, err: TextIO,
                 tty: bool, request: Callable[..., dict], served: bool = False,
                 umask: int | None = None, stdin: TextIO | None = None,
                 tty_in: bool = False) -> None:
        self.where, self.env, self.out, self.err = where, env, out, err
        self.tty = tty  # standard output is a terminal (colours)
        self.request = request  # one request to the master: msg -> reply, or ClientError
        self.served = served  # running inside the master (nothing local is at hand)
        self.umask = umask  # the submitter's, for the job and its output files
        self.stdin = stdin  # this process's only (sub --file -, after local_only)
        self.tty_in = tty_in  # the client's standard input is a terminal (qpy connect)

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


def local(request: Callable[..., dict] | None = None) -> Invocation:
    """This process's own directory, environment and standard streams; its requests go
    through ``request`` (by default ``qpy.client``'s: a fresh connection each, starting
    the master if it does not run)."""
    if request is None:
        from qpy.client import request
    umask = os.umask(0o022)
    os.umask(umask)
    return Invocation(None, dict(os.environ), sys.stdout, sys.stderr, sys.stdout.isatty(),
                      request, umask=umask, stdin=sys.stdin, tty_in=sys.stdin.isatty())


class using:  # noqa: N801 - used as a function: ``with using(inv):``
    """Run the commands of this thread in ``inv``."""

    def __init__(self, inv: Invocation) -> None:
        self.inv, self.token = inv, None

    def __enter__(self) -> Invocation:
        self.token = _current.set(self.inv)
        return self.inv

    def __exit__(self, *_: object) -> None:
        _current.reset(self.token)
