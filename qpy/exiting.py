"""How a ``qpy`` command process ends, whichever path ran the command (``qpy.front`` or
``qpy.cli``): one module of its own, built-in imports only, so that neither of the two
imports the other to exit."""

from __future__ import annotations

import os
import sys


def exit_now(code: int) -> None:
    """Exit without the interpreter's slow tear-down: a command holds nothing to clean up."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)
