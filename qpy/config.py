"""User settings (``qpy config``): the keys, their defaults, and how values are checked.

Values are stored as JSON text by the master. Each setter returns the message the user
sees; a bad value raises ConfigError with one line naming the key and the problem, and
nothing stored changes.
"""

from __future__ import annotations

import json
import math
import os

from qpy import attrs, render

BOOL_WORDS = {"true": True, "false": False}
DEFAULTS: dict[str, object] = {
    "checkFMT": render.DEFAULT_FMT,
    "copyScripts": False,
    "colour": True,
    "coloursScheme": list(render.DEFAULT_SCHEME),
    "defaultAttr": None,
    "andAttr": None,
    "orAttr": None,
    "killGrace": 10.0,
    "sourceTheseFiles": [],
    "notify": None,
}
KEYS = tuple(DEFAULTS)
MAX_GRACE = 86400.0  # one day: longer is surely a typo, and a kill should end in time
OBSOLETE = {
    "sleepTimeSubCtrl": "qpy starts jobs as soon as a slot is free",
    "sleepTimeCheckRun": "qpy records a job's end as soon as it exits",
    "paused_jobs": "use 'qpy ctrlQueue pause' or 'continue'",
}


class ConfigError(ValueError):
    """A bad ``qpy config`` request."""


def _one(key: str, values: list[str]) -> str:
    if len(values) != 1:
        raise ConfigError(f"{key} takes exactly one value, got {len(values)}")
    return values[0]


def _bool(key: str, values: list[str]) -> bool:
    word = _one(key, values).lower()
    if word not in BOOL_WORDS:
        raise ConfigError(f"{key} must be true or false, not {values[0]!r}")
    return BOOL_WORDS[word]


def _attr(key: str, values: list[str]) -> str | None:
    text = " ".join(values).strip()
    if not text:
        raise ConfigError(f"{key} needs an attribute expression, or 'none' to unset it")
    if text.lower() == "none":
        return None
    try:
        return attrs.normalize(text)
    except attrs.AttrError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _scheme(key: str, values: list[str]) -> list[str]:
    if len(values) not in (5, 6):
        raise ConfigError(f"{key} needs 5 or 6 colours (queue running done killed undone "
                          f"[lost]), got {len(values)}")
    for colour in values:
        if colour not in render.COLOURS:
            raise ConfigError(f"{key}: unknown colour {colour!r}; use one of "
                              f"{', '.join(render.COLOURS)}")
    return list(values)  # a scheme of 5 leaves lost jobs their default colour


def _fmt(key: str, values: list[str]) -> str:
    text = _one(key, values)
    if text == "default":
        return render.DEFAULT_FMT
    if not text:
        raise ConfigError(f"{key}: empty pattern {text!r}: check would print nothing; "
                          "give a pattern, or 'default'")
    try:
        return render.validate_fmt(text)
    except render.FormatError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _grace(key: str, values: list[str]) -> float:
    text = _one(key, values)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key} must be a number of seconds >= 0, not {text!r}")
    if value > MAX_GRACE:
        raise ConfigError(f"{key} must be at most {MAX_GRACE:.0f} seconds (one day), "
                          f"not {text!r}")
    return value


def is_none(values: list[str]) -> bool:
    """``none``: the word that empties a list or unsets an expression."""
    return [v.lower() for v in values] == ["none"]


def _files(key: str, values: list[str]) -> list[str]:
    """Files every job sources: checked now, so a typo does not fail every later job.
    The CLI made them absolute (the master has no working directory of the user's)."""
    if not values:
        raise ConfigError(f"{key} needs one or more files, or 'none'")
    if is_none(values):
        return []
    for path in values:
        why = ("not an absolute path" if not os.path.isabs(path)
               else "no such file" if not os.path.exists(path)
               else "not a file" if not os.path.isfile(path)
               else "not readable" if not os.access(path, os.R_OK) else None)
        if why:
            raise ConfigError(f"{key}: {why}: {path!r}")
    return list(values)


def _command(key: str, values: list[str]) -> str | None:
    """A command the master runs at each job's end and each idle warning of a session
    (``notify``): one word is a shell line, several are a command and its arguments, as
    with ``qpy sub``; ``none`` unsets."""
    if not values or not " ".join(values).strip():
        raise ConfigError(f"{key} needs a command, or 'none'")
    if is_none(values):
        return None
    if any("\0" in v for v in values):
        raise ConfigError(f"{key}: the command contains a NUL character")
    import shlex

    return values[0] if len(values) == 1 else shlex.join(values)


PARSERS = {"checkFMT": _fmt, "copyScripts": _bool, "colour": _bool, "coloursScheme": _scheme,
           "defaultAttr": _attr, "andAttr": _attr, "orAttr": _attr, "killGrace": _grace,
           "sourceTheseFiles": _files, "notify": _command}


def parse(key: str, values: list[str]) -> object:
    """The checked value for ``qpy config KEY VALUES...``."""
    if key in OBSOLETE:
        raise ConfigError(f"{key} is no longer used: {OBSOLETE[key]}")
    if key not in PARSERS:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")
    return PARSERS[key](key, values)


def message(key: str, value: object) -> str:
    """What the user is told after a change (the checkFMT texts are the manual's)."""
    if key == "checkFMT":
        shown = show_fmt(value)
        if value == render.DEFAULT_FMT:
            return f"Check pattern restored to the default value: '{shown}'."
        return f"Check pattern modified to '{shown}'"
    return f"{key} set to {describe(value)}."


def show_fmt(fmt: object) -> str:
    """A pattern written back the way the user types it (\\n, \\t)."""
    return str(fmt).replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def describe(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(value) if value else "none"
    return str(value)


def load(stored: dict[str, str]) -> dict[str, object]:
    """Settings as values, defaults filled in; unreadable entries fall back to the default."""
    settings = dict(DEFAULTS)
    for key, text in stored.items():
        if key in settings:
            try:
                settings[key] = json.loads(text)
            except ValueError:
                pass
    if settings["checkFMT"] == render.OLD_DEFAULT_FMT:  # 'default' before %o existed
        settings["checkFMT"] = render.DEFAULT_FMT
    return settings


def summary(settings: dict[str, object], paused: bool) -> str:
    """``qpy config`` with no arguments."""
    lines = [f"Check pattern: '{show_fmt(settings['checkFMT'])}'"]
    lines += [f"{key}: {describe(settings[key])}" for key in KEYS if key != "checkFMT"]
    if paused:
        lines.append("Job submission is paused.")
    return "\n".join(lines) + "\n"
