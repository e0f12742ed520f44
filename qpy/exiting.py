"""How every ``qpy`` command line ends, served by the master or run in this process.

Its own module, of built-in modules only, so that both ``qpy/front.py`` (which must stay
light) and ``qpy/cli.py`` use it without importing each other (an import circle).
"""

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
