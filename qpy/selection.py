"""Job selections for ``qpy check``, ``kill`` and ``clean``.

The CLI turns the user's words into a JSON-able dict with ``parse``; the master, which must
not trust what arrives on the wire, re-checks it with ``validate`` and then tests each job
with ``matches``. Ranges stay ranges so ``kill 1-1000000`` costs nothing to send or check.
"""

import os
import re
from collections.abc import Callable

from qpy.states import FINISHED, STATUSES  # noqa: F401 - re-exported for the CLI

_KEYS = ("ids", "ranges", "statuses", "dirs", "all")
MAX_ID = 2 ** 63 - 1  # what SQLite and the wire hold; a larger number cannot be a job

# An argument made only of these characters (and holding a digit) is meant as IDs, so it
# is reported as a bad ID rather than silently tried as a directory name.
_NUMERIC_RE = re.compile(r"[0-9,.+-]*[0-9][0-9,.+-]*")
_ID_RE = re.compile(r"[0-9]+")
_RANGE_RE = re.compile(r"([0-9]+)-([0-9]+)")


class SelectionError(ValueError):
    """A bad selection; the one-line message names the offending token."""


def _where(item: str, arg: str) -> str:
    return repr(item) if item == arg else f"{item!r} in {arg!r}"


def _positive_id(text: str, arg: str) -> int:
    value = int(text)
    if value <= 0:
        raise SelectionError(f"invalid job ID {_where(text, arg)}: IDs start at 1")
    if value > MAX_ID:
        raise SelectionError(f"invalid job ID {_where(text, arg)}: IDs go up to {MAX_ID}")
    return value


def job_id(text: str) -> int:
    """One job ID typed by the user (``notes ID``, a ``jump`` target)."""
    if not _ID_RE.fullmatch(text):
        raise SelectionError(f"invalid job ID {text!r}: not a number")
    return _positive_id(text, text)


def _parse_item(item: str, arg: str, ids: set[int], ranges: set[tuple[int, int]]) -> None:
    if _ID_RE.fullmatch(item):
        ids.add(_positive_id(item, arg))
        return
    match = _RANGE_RE.fullmatch(item)
    if match is None:
        what = "empty item in list" if not item else "not an ID or range"
        raise SelectionError(f"invalid job selection {_where(item or arg, arg)}: {what}")
    start, end = (_positive_id(text, arg) for text in match.groups())
    if start > end:
        raise SelectionError(f"invalid range {_where(item, arg)}: start is after end")
    if start == end:
        ids.add(start)
    else:
        ranges.add((start, end))


def _kinds(allow_all: bool, allow_dirs: bool) -> str:
    kinds = ["an ID", "range", "status"] + ["'all'"] * allow_all + ["directory"] * allow_dirs
    return ", ".join(kinds[:-1]) + " or " + kinds[-1]


def _parse_word(
    arg: str, statuses: tuple[str, ...], allow_all: bool, allow_dirs: bool, cwd: str
) -> tuple[str, str]:
    """Classify a non-numeric argument as ("status"|"all"|"dir", value)."""
    if arg in statuses:
        return "status", arg
    if arg in STATUSES:
        raise SelectionError(f"status {arg!r} cannot be used here; allowed: {', '.join(statuses)}")
    if arg == "all":
        if allow_all:
            return "all", arg
        raise SelectionError("'all' cannot be used here")
    path = os.path.join(cwd, arg)
    if allow_dirs and arg and os.path.isdir(path):
        return "dir", os.path.realpath(path)
    kinds = _kinds(allow_all, allow_dirs)
    raise SelectionError(f"invalid job selection {arg!r}: not {kinds}")


def parse(
    args: list[str], statuses: tuple[str, ...], allow_all: bool, allow_dirs: bool, cwd: str
) -> dict:
    """Turn command-line words into a selection dict; raises SelectionError on the first bad
    word so the user sees exactly which one to fix."""
    ids: set[int] = set()
    ranges: set[tuple[int, int]] = set()
    found: dict[str, set[str]] = {"status": set(), "dir": set(), "all": set()}
    for arg in args:
        if _NUMERIC_RE.fullmatch(arg):
            for item in arg.split(","):
                _parse_item(item, arg, ids, ranges)
        else:
            kind, value = _parse_word(arg, statuses, allow_all, allow_dirs, cwd)
            found[kind].add(value)
    return {
        "ids": sorted(ids),
        "ranges": [list(pair) for pair in sorted(ranges)],
        "statuses": [status for status in STATUSES if status in found["status"]],
        "dirs": sorted(found["dir"]),
        "all": bool(found["all"]),
    }


def is_empty(sel: dict) -> bool:
    """True when nothing is selected; commands like ``kill`` refuse rather than guess."""
    return not any(sel.get(key) for key in _KEYS)


def matches(sel: dict, job_id: int, status: str, cwd: str) -> bool:
    """Whether a job is selected; criteria are OR-ed, as the manual promises."""
    if sel.get("all"):
        return True
    if job_id in sel.get("ids", ()) or status in sel.get("statuses", ()):
        return True
    if any(start <= job_id <= end for start, end in sel.get("ranges", ())):
        return True
    # normpath only absorbs a trailing slash or "//"; subdirectories still do not match.
    return bool(cwd) and os.path.normpath(cwd) in sel.get("dirs", ())


def _is_int(value: object) -> bool:
    # bool is a subclass of int, and True must not select job 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _list(sel: dict, key: str) -> list:
    value = sel.get(key, [])
    if not isinstance(value, list):
        raise SelectionError(f"invalid selection: {key!r} must be a list, not {value!r}")
    return value


def _check_ids(values: list) -> list[int]:
    for value in values:
        if not _is_int(value) or not 0 < value <= MAX_ID:
            raise SelectionError(f"invalid selection: job ID {value!r} is not a positive integer")
    return sorted(set(values))


def _check_ranges(values: list) -> list[list[int]]:
    for pair in values:
        ok = isinstance(pair, list) and len(pair) == 2 and all(map(_is_int, pair))
        if not ok or not 0 < pair[0] <= pair[1] <= MAX_ID:
            raise SelectionError(f"invalid selection: bad range {pair!r}")
    return [list(pair) for pair in sorted({(start, end) for start, end in values})]


def _check_strings(values: list, key: str, valid: Callable[[str], bool]) -> list[str]:
    for value in values:
        if not isinstance(value, str) or not valid(value):
            raise SelectionError(f"invalid selection: bad entry {value!r} in {key!r}")
    return list(dict.fromkeys(values))


def validate(sel: object) -> dict:
    """Check a selection received from the wire and return a clean copy of it.

    Anything unexpected is rejected rather than ignored, so a client bug cannot widen what
    a ``kill`` or ``clean`` touches.
    """
    if not isinstance(sel, dict):
        raise SelectionError(f"invalid selection: expected an object, not {type(sel).__name__}")
    for key in sel:
        if key not in _KEYS:
            raise SelectionError(f"invalid selection: unknown key {key!r}")
    everything = sel.get("all", False)
    if not isinstance(everything, bool):
        raise SelectionError(f"invalid selection: 'all' must be true or false, not {everything!r}")
    return {
        "ids": _check_ids(_list(sel, "ids")),
        "ranges": _check_ranges(_list(sel, "ranges")),
        "statuses": _check_strings(_list(sel, "statuses"), "statuses", STATUSES.__contains__),
        "dirs": _check_strings(_list(sel, "dirs"), "dirs", os.path.isabs),
        "all": everything,
    }
