"""Words the CLI and both daemons share: a count with its noun, and how a job's process
ended, so that every text says them the same way.

No imports: the CLI and the multiuser load it at no cost.
"""

from __future__ import annotations


def plural(n: int, word: str = "job") -> str:
    """``n`` and ``word``, plural unless ``n`` is 1: "1 job", "3 cores", "0 running jobs"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def ended_by(exit_code: int | None, signal: int | None) -> str:
    """How a job's process ended, for mails and logs: "signal 9", "exit code 3", or "no
    exit code" (it never ran to an end). A process ends with one of the two, never both."""
    if signal is not None:
        return f"signal {signal}"
    return "no exit code" if exit_code is None else f"exit code {exit_code}"
