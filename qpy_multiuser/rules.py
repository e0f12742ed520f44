"""``distribution_rules``: how the cluster's cores are shared among users.

First line: ``even`` or ``explicit``, optionally ``minimum N``. For ``explicit``, then one
line per user: ``user=N`` (extra cores), ``user=P%`` (of the cores left after all
minimums), ``user=N+P%`` or ``user=N+M`` (a minimum of N for that user, plus extra), or the
old ``user N`` form. ``#`` comments and blank lines are allowed. Whatever explicit lines do
not hand out is spread over all users, one core at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from qpy import names
from qpy_multiuser.nodes import FileError, lines_of


@dataclass
class Extra:
    """One explicit line: an optional minimum override and an extra of N cores or P%."""

    minimum: int | None
    cores: int = 0
    percent: float = 0.0


@dataclass
class Rules:
    kind: str = "even"
    minimum: int = 0
    explicit: dict[str, Extra] = field(default_factory=dict)


class ShareError(ValueError):
    """The rules cannot be met with the cores there are."""


def _int(text: str, where: str) -> int:
    if not text.isdigit():
        raise FileError(f"{where}: expected a whole number of cores, not {text!r}")
    return int(text)


def _extra(text: str, where: str) -> Extra:
    minimum = None
    if "+" in text:
        first, text = text.split("+", 1)
        minimum = _int(first, where)
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise FileError(f"{where}: bad percentage {text!r}") from None
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise FileError(f"{where}: percentage must be between 0 and 100, not {text!r}")
        return Extra(minimum, percent=percent)
    return Extra(minimum, cores=_int(text, where))


def parse(text: str, path: str = "distribution_rules") -> Rules:
    lines = list(lines_of(text, path))
    if not lines:
        raise FileError(f"{path}: empty: the first line must be 'even' or 'explicit'")
    where, head = lines[0]
    words = head.split()
    if words[0] not in ("even", "explicit"):
        raise FileError(f"{where}: unknown distribution {words[0]!r} "
                        "(use even or explicit)")
    rules = Rules(words[0])
    if len(words) == 3 and words[1] == "minimum":
        rules.minimum = _int(words[2], where)
    elif len(words) != 1:
        raise FileError(f"{where}: expected '{words[0]} [minimum N]', got {head!r}")
    for where, line in lines[1:]:
        if rules.kind == "even":
            raise FileError(f"{where}: per-user lines need 'explicit' on the first line")
        user, sep, value = line.partition("=")
        if not sep:
            parts = line.split()
            if len(parts) != 2:
                raise FileError(f"{where}: expected 'user=N', 'user=P%', 'user=N+P%' or "
                                f"'user=N+M', got {line!r}")
            user, value = parts
        user, value = user.strip(), value.strip()
        if not names.is_user_name(user):
            raise FileError(f"{where}: invalid user name {user!r}")
        if user in rules.explicit:
            raise FileError(f"{where}: user {user} is listed twice")
        rules.explicit[user] = _extra(value, where)
    return rules


def load(path: Path) -> Rules:
    try:
        return parse(path.read_text(), str(path))
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror}") from None


def shares(rules: Rules, users: list[str], total: int) -> dict[str, tuple[int, int]]:
    """Each user's (guaranteed minimum, extra cores) for ``total`` cores.

    Users listed in ``explicit`` lines get their extra first (percentages of what is left
    after all minimums); the rest is spread over *all* users round-robin, so nothing is
    left unassigned and no extra is ever negative.
    """
    if not users:
        return {}
    minimum = {u: rules.minimum for u in users}
    for user, extra in rules.explicit.items():
        if user in minimum and extra.minimum is not None:
            minimum[user] = extra.minimum
    left = total - sum(minimum.values())
    if left < 0:
        raise ShareError(f"the minimums need {sum(minimum.values())} cores but there are "
                         f"only {total}")
    extra = dict.fromkeys(users, 0)
    if rules.kind == "explicit":
        for user, rule in rules.explicit.items():
            if user in extra:
                extra[user] = rule.cores + math.floor(rule.percent * left / 100)
        given = sum(extra.values())
        if given > left:
            raise ShareError(f"the explicit rules hand out {given} extra cores but only "
                             f"{left} are left after the minimums")
        left -= given
    base, remainder = divmod(left, len(users))
    for i, user in enumerate(users):
        extra[user] += base + (1 if i < remainder else 0)
    return {u: (minimum[u], extra[u]) for u in users}
