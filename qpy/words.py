"""Words the CLI and both daemons share: a count with its noun, so that every text says
it the same way.

No imports: the CLI and the multiuser load it at no cost.
"""

from __future__ import annotations


def plural(n: int, word: str = "job") -> str:
    """``n`` and ``word``, plural unless ``n`` is 1: "1 job", "3 cores", "0 running jobs"."""
    return f"{n} {word}{'' if n == 1 else 's'}"

