"""The ``checkFMT`` pattern and status colours used by ``qpy check``.

Imported on every ``qpy check``, so only cheap stdlib modules are loaded at import time and
termcolor is imported only when colour is actually wanted.
"""

import re
import time

from qpy.states import LIVE, STATUSES
from qpy.timetext import duration, format_limit

# %o is empty for a job that is live or ended cleanly, so normal lines read as the first
# qpy's "%j (%s):%c (on %n; wd: %d)"; a failure shows there: "12 (done, exit 3):...", and
# a hold: "13 (queue, held):...".
DEFAULT_FMT = "%j (%s%o):%c (on %n; wd: %d)\n"
OLD_DEFAULT_FMT = "%j (%s):%c (on %n; wd: %d)\n"  # stored by 'checkFMT default' before %o
NONE = "-"  # what a placeholder with no value prints (no node yet, not started, ...)
COLOURS = ("grey", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
# One colour per status, in the order of qpy.states.STATUSES.
DEFAULT_SCHEME = ("yellow", "blue", "green", "red", "grey", "magenta")
_STATUS_ORDER = STATUSES

_PLACEHOLDER_RE = re.compile(r"%(.?)", re.DOTALL)
_ESCAPE_RE = re.compile(r"\\([nt\\])")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_TIME_FMT = "%Y-%m-%d %H:%M:%S"


class FormatError(ValueError):
    """A bad checkFMT pattern; rejected when configured, not when every job is printed."""


def idle_text(seconds: float) -> str:
    """An interactive session's idle time as ``[D-]HH:MM:SS`` (``2-04:00:00``), the form
    of ``qpy connect -l``, ``%I``, the admin's status and the reason ``idle ...``: a time
    limit's form, since the admin's idle_limit is one."""
    return format_limit(max(0, int(seconds)))


def _idle(job: dict, now: float) -> str:
    """Idle time of a running interactive session; ``-`` for anything else."""
    since = job.get("idle_since")
    return NONE if since is None or job["status"] != "running" else idle_text(now - since)


def _elapsed(job: dict, now: float) -> float:
    """Time in the queue for queued jobs, otherwise run time (or queue-to-end if never run)."""
    if job["status"] == "queue":
        return now - job["t_queue"]
    start = job["t_start"] if job.get("t_start") is not None else job["t_queue"]
    end = job["t_end"] if job.get("t_end") is not None else now
    return end - start


def _datetime(stamp: float | None) -> str:
    return NONE if stamp is None else time.strftime(_TIME_FMT, time.localtime(stamp))


def _memory(mem: float) -> str:
    # "5" rather than "5.0": memory is usually whole GB and the float form looks like noise.
    mem = float(mem)
    return str(int(mem)) if mem.is_integer() else f"{mem:.6g}"


def _exit(job: dict) -> str:
    """Signal wins over exit code: "sig9" explains a kill better than the shell's 137."""
    if job["status"] in LIVE:
        return NONE
    if job.get("signal") is not None:
        return f"sig{job['signal']}"
    if job.get("exit_code") is not None:
        return str(job["exit_code"])
    return NONE


def _outcome(job: dict) -> str:
    """What the status alone does not say: ", held" for a held queued job; how a finished
    job ended, when not cleanly: ", exit 3", ", signal 9", the reason; empty for a clean
    end or a live job, so ``(%s%o)`` reads ``(done)`` normally."""
    if job["status"] in LIVE:
        return ", held" if job.get("held") else ""
    parts = []
    if job.get("signal") is not None:
        parts.append(f"signal {job['signal']}")
    elif job.get("exit_code"):
        parts.append(f"exit {job['exit_code']}")
    if job.get("reason"):
        parts.append(job["reason"])
    return "".join(", " + part for part in parts)


def _gb(value: float | None) -> str:
    """Peak memory in GB to the MB; ``-`` while unknown (no run has ended yet)."""
    return NONE if value is None else f"{value:.3f}"


def _node(job: dict) -> str | None:
    """Where a job runs or ran: its node, or all of a multi-node job's (``node1+node2``,
    the first, where its command runs, first)."""
    if job.get("node") and job.get("nodes"):
        return "+".join(job["nodes"])
    return job.get("node")


def _node_or_attr(job: dict) -> str:
    if job.get("node"):
        return _node(job)
    return f"[{job['attr']}]" if job.get("attr") else NONE


def _or_none(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def _notes(job: dict) -> str:
    return "\n" + job["notes"] if job.get("notes") else ""


_FIELDS = {
    "j": lambda job, now: str(job["id"]),
    "s": lambda job, now: job["status"],
    "c": lambda job, now: job["command"],
    "d": lambda job, now: job["cwd"],
    "n": lambda job, now: _or_none(_node(job)),
    "N": lambda job, now: str(job["n_cores"]),
    "m": lambda job, now: _memory(job["mem"]),
    "a": lambda job, now: _or_none(job.get("attr")),
    "A": lambda job, now: _node_or_attr(job),
    "R": lambda job, now: duration(_elapsed(job, now)),
    "Q": lambda job, now: _datetime(job.get("t_queue")),
    "S": lambda job, now: _datetime(job.get("t_start")),
    "E": lambda job, now: _datetime(job.get("t_end")),
    "K": lambda job, now: _notes(job),
    "e": lambda job, now: _exit(job),
    "o": lambda job, now: _outcome(job),
    "r": lambda job, now: _or_none(job.get("reason")),
    "M": lambda job, now: _gb(job.get("peak_mem")),
    "U": lambda job, now: duration(job.get("cpu")),
    "T": lambda job, now: format_limit(job.get("time_limit")),
    "P": lambda job, now: _or_none(job.get("position")),
    "I": _idle,
    "%": lambda job, now: "%",
}


def _decode_escapes(fmt: str) -> str:
    # Only these three: codecs' unicode_escape would mangle non-ASCII text in the pattern.
    return _ESCAPE_RE.sub(lambda match: _ESCAPES[match.group(1)], fmt)


def validate_fmt(fmt: str) -> str:
    """Decode the shell-typed escapes and reject unknown placeholders at config time."""
    decoded = _decode_escapes(fmt)
    for match in _PLACEHOLDER_RE.finditer(decoded):
        key = match.group(1)
        if not key:
            raise FormatError(f"invalid checkFMT {fmt!r}: lone '%' at the end")
        if key not in _FIELDS:
            raise FormatError(f"invalid checkFMT {fmt!r}: unknown placeholder {'%' + key!r}")
    return decoded


def format_job(fmt: str, job: dict, now: float) -> str:
    """Expand ``fmt`` in one pass, so '%' text inside a command is never expanded again.

    Unknown placeholders are left as typed: ``validate_fmt`` rejects them on configuration,
    and a stale config must not stop ``qpy check`` from listing jobs.
    """

    def expand(match: re.Match[str]) -> str:
        field = _FIELDS.get(match.group(1))
        return match.group(0) if field is None else field(job, now)

    return _PLACEHOLDER_RE.sub(expand, fmt)


def colour_for(status: str, scheme: list[str]) -> str:
    """Colour of a status; a short or invalid scheme falls back to the default per status."""
    if status not in _STATUS_ORDER:
        return "white"
    index = _STATUS_ORDER.index(status)
    colour = scheme[index] if index < len(scheme) else None
    return colour if colour in COLOURS else DEFAULT_SCHEME[index]


def _coloured(text: str, colour: str) -> str:
    from termcolor import colored  # lazy: termcolor is only needed when colouring

    # Trailing newlines stay outside the colour codes so each job ends on a clean line.
    body = text.rstrip("\n")
    if not body:
        return text
    return colored(body, colour, force_color=True) + text[len(body) :]


def render_jobs(jobs: list[dict], fmt: str, scheme: list[str] | None, now: float) -> str:
    """All jobs' text; ``scheme=None`` means no colour (the caller decides, e.g. not a tty)."""
    parts = []
    for job in jobs:
        text = format_job(fmt, job, now)
        if scheme is not None:
            text = _coloured(text, colour_for(job["status"], scheme))
        parts.append(text)
    return "".join(parts)
