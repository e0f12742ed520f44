"""Memory cgroups for jobs: which one a node offers, and one per job. Standard library
only, and imports nothing of qpy: it runs on the nodes, sent down the ssh session beside
the launcher and the monitoring probe, and in-process where those run locally.

A job gets a memory cgroup of its own, ``job_<ID>``, below a *base* its user may write
(delegated by the admin), with ``memory.limit_in_bytes`` (cgroup v1; swap included where
the kernel accounts it) or ``memory.max`` (v2; no swap, the whole job ended on OOM). The
base follows the node's ``cgroup`` setting in the ``nodes`` file:

* a path, ``%u`` replaced by the user's name (v1 or v2, as the path lies);
* nothing: ``<v1 memory mount>/qpy/<user>`` if it exists, else, on v2, the cgroup the
  launcher runs in if that one is delegated to the user (a unit with ``Delegate=yes``);
* ``systemd``: as nothing, and the launchers are started with ``systemd-run --user --scope
  -p Delegate=yes`` so that theirs is (cgroup v2 lets a process move only within a
  subtree its user may write, so the launcher must start inside one);
* ``off``: no cgroup; the watchdog of ``qpy/limits.py`` enforces memory.

The supervisor enters the job's cgroup just to start the job, which inherits it, and
leaves it at once (for the base on v1, for the launcher's leaf on v2). On v1 an eventfd on
``memory.oom_control`` tells it of an OOM, so it can end the job as a whole; on v2
``memory.oom.group`` does that.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pwd
import shutil

LEAF = "qpy-launcher"  # v2: the launcher's and the supervisors' cgroup in a delegated one
WATCHDOG = "watchdog"
SYSTEMD_RUN = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
               "-p", "Delegate=yes", "--"]
EFD_CLOEXEC, EFD_NONBLOCK = 0o2000000, 0o4000
_LIBC = ctypes.CDLL(None, use_errno=True)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, value: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _counter(text: str, name: str) -> int:
    """The value of ``name N`` in a cgroup's key-value file (memory.events, oom_control)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0



@functools.cache
def hierarchies() -> tuple[str | None, str | None]:
    """Mount points of the v1 memory controller and of cgroup2 if it has the memory
    controller (None where the node has none). Read once per process (the launcher reads
    it before forking its supervisors): parsing the mount table costs a job start ~0.25 ms."""
    v1 = v2 = None
    for line in _read("/proc/self/mounts").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup" and "memory" in fields[3].split(",") and v1 is None:
            v1 = fields[1]
        elif fields[2] == "cgroup2" and v2 is None \
                and "memory" in _read(f"{fields[1]}/cgroup.controllers").split():
            v2 = fields[1]
    return v1, v2


def _version(path: str, v1: str | None, v2: str | None) -> int | None:
    """1 or 2 if ``path`` lies in that hierarchy."""
    for version, mount in ((1, v1), (2, v2)):
        if mount and (path == mount or path.startswith(mount.rstrip("/") + "/")):
            return version
    return None


@functools.cache
def delegated_own(v2: str) -> str | None:
    """The v2 cgroup this process runs in (the one above, if this is the launcher's leaf),
    if this user may manage it, as in a unit with ``Delegate=yes``. Found once per
    process, by the launcher before it moves into its leaf (``prepare_launcher``), for the
    supervisors it forks: finding it costs ~0.1 ms, too much for each job's start, and
    the answer changes only with the launcher's own cgroup."""
    own = next((line[3:] for line in _read("/proc/self/cgroup").splitlines()
                if line.startswith("0::")), None)
    if own is None:
        return None
    path = os.path.join(v2, own.lstrip("/"))
    if os.path.basename(path) == LEAF:
        path = os.path.dirname(path)
    writable = all(os.access(f"{path}/{name}", os.W_OK)
                   for name in ("cgroup.procs", "cgroup.subtree_control"))
    return path if writable and "memory" in _read(f"{path}/cgroup.controllers").split() else None


@functools.cache
def user() -> str:
    """This process's user name on this node (the one cgroup paths name)."""
    return pwd.getpwuid(os.getuid()).pw_name


def prepare_launcher() -> None:
    """Learn the node's hierarchies and the user once, for every supervisor to inherit;
    on v2, a launcher in a delegated cgroup moves into a leaf of it and enables the
    memory controller below it: a v2 cgroup with children may hold no process, and each
    job gets a child of its own."""
    user()
    _, v2 = hierarchies()
    base = delegated_own(v2) if v2 else None
    if base is None:
        return
    try:
        os.makedirs(f"{base}/{LEAF}", exist_ok=True)
        _write(f"{base}/{LEAF}/cgroup.procs", os.getpid())
        if "memory" not in _read(f"{base}/cgroup.subtree_control").split():
            _write(f"{base}/cgroup.subtree_control", "+memory")
    except OSError:
        pass


def launcher_prefix(setting: str | None) -> list[str]:
    """What a node's launcher is started behind: ``cgroup=systemd`` puts it in a scope of
    the user's systemd that is delegated to the user."""
    return list(SYSTEMD_RUN) if setting == "systemd" else []


def _base(setting: str | None, user: str) -> tuple[str, int] | None:
    """The cgroup below which ``user``'s jobs get theirs, and its version, per the node's
    ``cgroup`` setting; None: the node offers none (then the watchdog)."""
    if setting == "off":
        return None
    v1, v2 = hierarchies()
    if setting and setting.startswith("/"):
        path = setting.replace("%u", user)
        version = _version(path, v1, v2)
        return (path, version) if version and os.path.isdir(path) else None
    if setting is None and v1 and os.path.isdir(f"{v1}/qpy/{user}"):
        return f"{v1}/qpy/{user}", 1
    own = delegated_own(v2) if v2 else None
    return (own, 2) if own else None


def node_memory_mode(setting: str | None) -> str:
    """What enforces memory on this node as far as any account can tell, for ``qpy
    status``: ``cgroup v1``/``cgroup v2`` when the node has the cgroup the setting names
    (up to the user's own directory), else ``watchdog``."""
    if setting == "off":
        return WATCHDOG
    v1, v2 = hierarchies()
    if setting == "systemd":
        return "cgroup v2" if v2 and shutil.which("systemd-run") else WATCHDOG
    pattern = setting or (f"{v1}/qpy/%u" if v1 else "")
    fixed = os.path.dirname(pattern.split("%u")[0]) if "%u" in pattern else pattern
    version = _version(fixed, v1, v2) if fixed and os.path.isdir(fixed) else None
    return f"cgroup v{version}" if version else WATCHDOG


class Cgroup:
    """One job's memory cgroup, made below a base the job's user may write."""

    def __init__(self, base: str, version: int, job: int, limit: int) -> None:
        self.path, self.v2 = f"{base}/job_{job}", version == 2
        self.home = f"{base}/{LEAF}" if self.v2 else base  # where the supervisor goes back
        self.limit = limit
        self.events = -1
        try:
            os.mkdir(self.path)
        except FileExistsError:  # left by a supervisor that was killed
            pass
        try:
            self._set_limit()
        except OSError:
            self.remove()
            raise

    def _set_limit(self) -> None:
        if self.v2:
            _write(f"{self.path}/memory.max", self.limit)
            for name, value in (("memory.swap.max", 0), ("memory.oom.group", 1)):
                self._try(name, value)
        else:
            self._try("memory.memsw.limit_in_bytes", self.limit)  # raising: this one first
            _write(f"{self.path}/memory.limit_in_bytes", self.limit)
            self._try("memory.memsw.limit_in_bytes", self.limit)
            self._watch_oom()

    def _try(self, name: str, value: object) -> None:
        try:
            _write(f"{self.path}/{name}", value)
        except OSError:
            pass

    def _watch_oom(self) -> None:
        """v1: an eventfd the kernel signals when the cgroup runs out of memory."""
        efd = _LIBC.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if efd < 0:
            return
        control = os.open(f"{self.path}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write(f"{self.path}/cgroup.event_control", f"{efd} {control}")
            self.events = efd
        except OSError:
            os.close(efd)
        finally:
            os.close(control)

    def enter(self) -> None:
        _write(f"{self.path}/cgroup.procs", os.getpid())

    def leave(self) -> None:
        _write(f"{self.home}/cgroup.procs", os.getpid())

    def oom_killed(self) -> bool:
        if self.v2:
            events = _read(f"{self.path}/memory.events")
            return bool(_counter(events, "oom_kill") or _counter(events, "oom_group_kill"))
        return _counter(_read(f"{self.path}/memory.oom_control"), "oom_kill") > 0

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        text = _read(f"{self.path}/{name}").strip()
        return int(text) if text.isdigit() else self.limit

    def remove(self) -> None:
        if self.events >= 0:
            os.close(self.events)
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def job_cgroup(setting: str | None, job: int, limit: int) -> Cgroup | None:
    """The job's own memory cgroup, if the node offers one this user may write."""
    try:
        base = _base(setting, user())
        return Cgroup(*base, job, limit) if base else None
    except (OSError, KeyError):
        return None
