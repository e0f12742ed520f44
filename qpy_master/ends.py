"""A run's end as a launcher reports it (``ended``, or a ``fate`` that carries an end), in
the words of the job's record: its status, exit code or signal, reason and usage. Read
by the master for the runs it watches and by ``reconcile`` for those it gave up on."""

from __future__ import annotations

from qpy import timetext
from qpy.model import Job
from qpy.states import DONE, KILLED


def start_error(job: Job, error: object, where: object) -> str | None:
    """The reason of a job that could not start, from the supervisor's short record."""
    if not error:
        return None
    if where == "cwd":
        return (f"failed to start: the submission directory {job.cwd} cannot be used on "
                f"{job.node} ({error}); qpy needs it visible on the nodes, as with "
                "shared home directories")
    if where in ("out", "err"):
        return f"failed to start: {error}: {job.output(where)}"
    return f"failed to start: {error}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


def memory_reason(job: Job, peak: float) -> str:
    """``memory limit 5 GB (peak 5.3 GB)``: a job its node ended for using more memory
    than it asked for (peak in GB, as the node measured it)."""
    shown = f"{peak:.2g}" if peak < 1 else f"{peak:.1f}".removesuffix(".0")
    return f"memory limit {job.mem:g} GB (peak {shown} GB)"


def end_of(job: Job, event: dict) -> tuple[str, dict]:
    """A run's end from the launcher's ``ended`` event: the job's new status and fields
    (killed at its time limit or for its memory, its CPU time and peak memory)."""
    limited = bool(event.get("limit")) or event.get("mem_kill") is not None
    reason = start_error(job, event.get("error"), event.get("in"))
    if event.get("mem_kill") is not None:
        reason = memory_reason(job, float(event["mem_kill"]))
    elif limited:
        reason = f"time limit {timetext.format_limit(job.time_limit)}"
    rss = _number(event.get("rss"))  # KB
    return (KILLED if job.kill_requested or limited else DONE), {
        "exit_code": event.get("exit"), "signal": event.get("signal"), "reason": reason,
        "t_end": event.get("t_end"), "cpu": _number(event.get("cpu")),
        "peak_mem": None if rss is None else round(rss / 1024 ** 2, 6)}
