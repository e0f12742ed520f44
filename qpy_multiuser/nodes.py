"""The ``nodes`` file: one node per line, parsed strictly, errors as ``file:line: reason``.

    <name> [address=A] [cores=N] [memory=GB] [attributes=a,b]... [pref_multicore=true]
           [check_dir=PATH] [cgroup=PATH|systemd|off] [rlimit_as=true] [cpu_lock=PATH]
    <name> <n_cores> [M]            (the manual's short form; M = prefers multicore jobs)

``#`` starts a comment. Cores and memory left out are detected: at once for a local node,
by node monitoring's first sample for a remote one (which is down until then). ``cgroup``,
``rlimit_as`` and ``cpu_lock`` say how the node enforces what jobs were granted
(``qpy/limits.py``, ``qpy/cgroups.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qpy import names
from qpy.ssh import LOCAL_ADDRESSES
from qpy_multiuser import probe


class FileError(ValueError):
    """A malformed admin file; the text is ``file:line: reason``."""


def lines_of(text: str, path: object) -> Iterator[tuple[str, str]]:
    """The lines of an admin file that say something, ``#`` comments cut and blanks
    stripped, each with its place (``file:line``) for errors."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield f"{path}:{number}", line


@dataclass
class Node:
    """A node as configured, plus what is allocated on it right now."""

    name: str
    address: str
    cores: int
    mem: float
    attrs: frozenset[str] = frozenset()
    pref_multicore: bool = False
    check_dir: str | None = None  # whose disk node monitoring reports
    cgroup: str | None = None  # the users' memory cgroups: a path with %u, systemd or off
    rlimit_as: bool = False  # ulimit -v at each job's memory too
    cpu_lock: str | None = None  # the lock file the node's jobs agree on CPUs through
    up: bool = True
    state: str = "up"  # up, down, unknown (a remote node not checked yet) or draining
    reason: str | None = None  # why it is down
    drain_since: float | None = None  # drained by the admin (qpy-admin drain) since then
    drain_reason: str | None = None
    detect: frozenset[str] = frozenset()  # "cores", "mem": taken from monitoring
    measured: dict = field(default_factory=dict)  # the last sample
    used_cores: int = 0
    used_mem: float = 0.0
    jobs: set = field(default_factory=set)

    @property
    def free_cores(self) -> int:
        return self.cores - self.used_cores

    @property
    def free_mem(self) -> float:
        return self.mem - self.used_mem

    @property
    def usable(self) -> bool:
        """In the pool: up, and not drained (a drained node's jobs run on, no new ones)."""
        return self.up and self.drain_since is None

    @property
    def local(self) -> bool:
        return self.address in LOCAL_ADDRESSES

    def public(self) -> dict:
        return {"name": self.name, "address": self.address, "cores": self.cores,
                "mem": self.mem, "attrs": sorted(self.attrs), "up": self.up,
                "state": self.state, "reason": self.reason,
                "pref_multicore": self.pref_multicore, "check_dir": self.check_dir,
                "cgroup": self.cgroup, "rlimit_as": self.rlimit_as, "cpu_lock": self.cpu_lock,
                "drain_since": self.drain_since, "drain_reason": self.drain_reason,
                "tools": self.measured.get("tools")}


def _bool(text: str, where: str, key: str = "pref_multicore") -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise FileError(f"{where}: {key} must be true or false, not {text!r}")


def _node_path(text: str, where: str, key: str, words: tuple[str, ...] = ()) -> str:
    """An absolute path on the node (or one of ``words``)."""
    if text in words or (text.startswith("/") and "\0" not in text):
        return text
    also = "".join(f" or {w}" for w in words)
    raise FileError(f"{where}: {key} must be an absolute path{also}, not {text!r}")


def _number(text: str, where: str, what: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise FileError(f"{where}: {what} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise FileError(f"{where}: {what} must be positive, not {text!r}")
    return value


def parse_line(words: list[str], where: str) -> Node:
    name = words[0]
    if not names.is_node_name(name):
        raise FileError(f"{where}: invalid node name {name!r}")
    fields: dict = {"address": name, "cores": None, "mem": None, "attrs": set(), "pref": False}
    rest = words[1:]
    if rest and "=" not in rest[0]:  # short form: <name> <n_cores> [M]
        fields["cores"] = int(_number(rest[0], where, "cores", int))
        if rest[1:] not in ([], ["M"]):
            raise FileError(f"{where}: the short form is '<name> <n_cores> [M]', got "
                            f"{' '.join(words)!r}")
        fields["pref"] = rest[1:] == ["M"]
        rest = []
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise FileError(f"{where}: expected key=value, got {item!r}")
        _apply(fields, key, value, where)
    local = fields["address"] in LOCAL_ADDRESSES
    cores = fields["cores"] or (probe.cores() if local else 0)
    mem = fields["mem"] or (probe.memory()[0] if local else 0.0)
    detect = frozenset(k for k in ("cores", "mem") if not fields[k] and not local)
    return Node(name, fields["address"], cores, mem, frozenset(fields["attrs"]), fields["pref"],
                fields.get("check_dir"), detect=detect, cgroup=fields.get("cgroup"),
                rlimit_as=fields.get("rlimit_as", False), cpu_lock=fields.get("cpu_lock"))


def _apply(fields: dict, key: str, value: str, where: str) -> None:
    if key == "address":
        fields["address"] = value
    elif key == "cores":
        fields["cores"] = int(_number(value, where, "cores", int))
    elif key in ("memory", "mem"):
        fields["mem"] = float(_number(value, where, "memory", float))
    elif key in ("attributes", "attribute"):
        for attr in value.split(","):
            if not names.is_node_name(attr):
                raise FileError(f"{where}: invalid attribute {attr!r}")
            fields["attrs"].add(attr)
    elif key == "pref_multicore":
        fields["pref"] = _bool(value, where)
    elif key == "check_dir":
        fields["check_dir"] = value
    elif key == "cgroup":
        fields["cgroup"] = _node_path(value, where, key, ("systemd", "off"))
    elif key == "rlimit_as":
        fields["rlimit_as"] = _bool(value, where, key)
    elif key == "cpu_lock":
        fields["cpu_lock"] = _node_path(value, where, key)
    else:
        raise FileError(f"{where}: unknown key {key!r} (use address, cores, memory, "
                        "attributes, pref_multicore, check_dir, cgroup, rlimit_as or "
                        "cpu_lock)")


def load(path: Path) -> dict[str, Node]:
    """All nodes in file order; the whole file is refused if any line is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror}") from None
    nodes: dict[str, Node] = {}
    for where, line in lines_of(text, path):
        node = parse_line(line.split(), where)
        if node.name in nodes:
            raise FileError(f"{where}: node {node.name} is listed twice")
        nodes[node.name] = node
    if not nodes:
        raise FileError(f"{path}: no nodes defined")
    return nodes


def load_users(path: Path) -> list[str]:
    """``allowed_users``: one name per line, ``#`` comments."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror}") from None
    users: list[str] = []
    for where, line in lines_of(text, path):
        words = line.split()
        if len(words) > 1 or not names.is_user_name(words[0]):
            raise FileError(f"{where}: invalid user name {line!r}")
        if words[0] not in users:
            users.append(words[0])
    return users
