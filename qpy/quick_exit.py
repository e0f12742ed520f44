"""The one way a ``qpy`` command line ends, for the front and the full command line alike.

Built-in modules only: the front (``qpy/front.py``) imports this without click.
"""

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
