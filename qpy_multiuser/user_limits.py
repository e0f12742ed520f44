"""The admin's ``limits`` file: how much one user may hold at once, whatever their share.

    # every user: at most 20 running jobs and 64 cores; memory not limited
    default jobs=20 cores=64
    # ana may use more; ben runs two jobs at a time, of any size
    ana     cores=128 memory=512
    ben     jobs=2 cores=none

Keys: ``jobs`` (running jobs), ``cores``, ``memory`` (GB, also ``mem``); a value is a
positive number or ``none`` (no limit). A user's line overrides the keys it names and
takes the others from the ``default`` line; users without a line have the default. A
missing file limits nobody. The file is parsed strictly, as the other admin files: a bad
line refuses the whole file with ``file:line: reason``.

A limit never stops a running job: a job that would take its user past a limit waits,
and the multiuser says which limit holds it (``reason``), for ``qpy check`` and ``qpy
why``. A user's fair share is unchanged; cores a limited user cannot use are not held
for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from qpy import names
from qpy.words import plural
from qpy_multiuser.nodes import FileError, lines_of

EPSILON = 1e-9  # memory sums of floats: 0.1 + 0.2 GB must fit a 0.3 GB limit
KEYS = {"jobs": "jobs", "cores": "cores", "memory": "mem", "mem": "mem"}


@dataclass(frozen=True)
class Caps:
    """One user's limits; None: not limited."""

    jobs: int | None = None
    cores: int | None = None
    mem: float | None = None

    def public(self) -> dict:
        return {"jobs": self.jobs, "cores": self.cores, "memory": self.mem}


NONE = Caps()


@dataclass
class Limits:
    """The whole file: the default caps and each listed user's."""

    default: Caps = NONE
    users: dict[str, Caps] = field(default_factory=dict)

    def of(self, user: str) -> Caps:
        return self.users.get(user, self.default)


def _value(key: str, text: str, where: str) -> int | float | None:
    """One value of ``key`` as written (``memory`` or ``mem`` are in GB)."""
    if text.lower() == "none":
        return None
    memory = KEYS[key] == "mem"
    try:
        value = float(text) if memory else int(text)
    except ValueError:
        kind = "a number of GB" if memory else "a whole number"
        raise FileError(f"{where}: {key} must be {kind} or none, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise FileError(f"{where}: {key} must be positive, not {text!r}")
    return value


def _caps(words: list[str], base: Caps, where: str) -> Caps:
    """``base`` with the ``key=value`` items of one line applied."""
    changes: dict[str, int | float | None] = {}
    for item in words:
        key, eq, text = item.partition("=")
        name = KEYS.get(key)
        if not eq or not text:
            raise FileError(f"{where}: expected key=value, got {item!r}")
        if name is None:
            raise FileError(f"{where}: unknown key {key!r} (use jobs, cores or memory)")
        if name in changes:
            raise FileError(f"{where}: {key} is given twice")
        changes[name] = _value(key, text, where)
    if not changes:
        raise FileError(f"{where}: {words[0] if words else 'the line'} needs jobs=, cores= "
                        "or memory=")
    return replace(base, **changes)


def parse(text: str, path: str = "limits") -> Limits:
    """The file's limits; FileError naming the first bad line."""
    lines: list[tuple[str, list[str]]] = []
    default_line = None
    for where, line in lines_of(text, path):
        words = line.split()
        if words[0] == "default":
            if default_line is not None:
                raise FileError(f"{where}: default is given twice")
            default_line = (where, words[1:])
        elif not names.is_user_name(words[0]):
            raise FileError(f"{where}: invalid user name {words[0]!r}")
        elif any(name == words[0] for name, _ in lines):
            raise FileError(f"{where}: user {words[0]} is listed twice")
        else:
            lines.append((words[0], [where, *words[1:]]))
    limits = Limits()
    if default_line is not None:
        where, items = default_line
        if not items:
            raise FileError(f"{where}: default needs jobs=, cores= or memory=")
        limits.default = _caps(items, NONE, where)
    for user, (where, *items) in lines:
        if not items:
            raise FileError(f"{where}: {user} needs jobs=, cores= or memory=")
        limits.users[user] = _caps(items, limits.default, where)
    return limits


def load(path: Path) -> Limits:
    """The admin's ``limits`` file; no file, no limits."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Limits()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, str(path))


def reason(caps: Caps, jobs: int, cores: int, mem: float, more_cores: int,
           more_mem: float) -> str | None:
    """Which limit keeps a user who runs ``jobs`` jobs on ``cores`` cores and ``mem`` GB
    from starting one more of ``more_cores`` cores and ``more_mem`` GB; None if none
    does. The texts are what ``qpy check`` and ``qpy why`` show."""
    if caps.jobs is not None and jobs + 1 > caps.jobs:
        return f"limit of {plural(caps.jobs, 'running job')} per user " \
               f"({jobs} running)"
    if caps.cores is not None and cores + more_cores > caps.cores:
        return f"limit of {plural(caps.cores, 'core')} per user " \
               f"({cores} in use, {more_cores} more asked)"
    if caps.mem is not None and mem + more_mem > caps.mem + EPSILON:
        return f"limit of {caps.mem:g} GB of memory per user ({_gb(mem)} GB in use, " \
               f"{more_mem:g} GB more asked)"
    return None


def full(caps: Caps, jobs: int, cores: int, mem: float) -> bool:
    """Whether a user can start nothing at all now, whatever its size: they then hold
    back no one (neither their minimum nor the rule against borrowing while they wait)."""
    return ((caps.jobs is not None and jobs >= caps.jobs)
            or (caps.cores is not None and cores >= caps.cores)
            or (caps.mem is not None and mem >= caps.mem - EPSILON))


def _gb(value: float) -> str:
    return f"{round(value, 3):g}"
