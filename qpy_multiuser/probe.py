"""What node monitoring measures on a node. Standard library only.

The multiuser samples its local nodes by calling ``Sampler.sample`` itself, and runs this
file on each remote node at the end of one long-lived ssh session (its source is sent down
the session, so the node needs only python3)::

    python3 -I -S -u -c BOOT INTERVAL [CHECK_DIR [CGROUP]]

(``qpy/cgroups.py`` is sent beside it). It prints one JSON line per ``INTERVAL`` seconds and
exits when its stdin closes, so it never outlives the multiuser. A sample holds the node's
cores, memory (total and in use, in GB), 1-minute load, the disk of ``CHECK_DIR`` (total
and used, in GB), what enforces jobs' memory there (per the node's ``CGROUP`` setting), and
*outsiders*: the processes that use at least half a core and were not started by qpy.
qpy's processes are found by their ancestry: every launcher and job supervisor has
``qpy-launcher`` in its command line (``qpy_master/launcher.py`` for launchers started
before their boot was the same locally and remotely), and jobs descend from supervisors.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import time

if __name__ == "__main__":  # run by its boot (qpy/ssh.py), which put qpy/cgroups.py here
    import cgroups
else:
    from qpy import cgroups

# The protocol: one JSON object per line, a sample, with these fields (checked by
# ``monitor`` before a sample counts):
#   cores       int    CPUs this process may run on
#   mem_total   float  GB of memory; mem_used: GB in use (total minus available)
#   load        float  1-minute load average
#   disk        null, {"path", "total", "used"} in GB, or {"error"}: the check_dir's disk
#   outsiders   int    busy processes not started by qpy
#   host        str    the node's own host name
#   memory_limit str   cgroup v1, cgroup v2 or watchdog: what enforces jobs' memory
#   tools       [str]  which of TOOLS are on the PATH (what interactive sessions need)
SAMPLE = ("cores", "mem_total", "mem_used", "load", "disk", "outsiders", "host",
          "memory_limit", "tools")
TOOLS = ("tmux", "xpra", "Xvfb")
MARKERS = (b"qpy-launcher", b"qpy_master/launcher.py")
BUSY = 0.5  # a process using this share of a core is busy
GB = 1024 ** 3


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def memory() -> tuple[float, float]:
    """(total, in use) in GB, in use being total minus available."""
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = int(value.split()[0]) * 1024
    total = fields.get("MemTotal", 0)
    return round(total / GB, 1), round((total - fields.get("MemAvailable", 0)) / GB, 1)


def disk(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return {"error": f"{path}: {exc.strerror}"}
    total = st.f_blocks * st.f_frsize
    return {"path": path, "total": round(total / GB, 1),
            "used": round((total - st.f_bavail * st.f_frsize) / GB, 1)}


def tools() -> list[str]:
    """Which programs of interactive sessions (``qpy connect``) this node has."""
    return [name for name in TOOLS if shutil.which(name)]


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent PID, CPU ticks used) of one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _is_qpy(pid: int, parents: dict[int, int], memo: dict[int, bool]) -> bool:
    """Whether ``pid`` is a launcher or supervisor, or descends from one."""
    chain = []
    while pid > 1 and pid not in memo:
        chain.append(pid)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            cmdline = b""
        if any(marker in cmdline for marker in MARKERS):
            memo[pid] = True
            break
        pid = parents.get(pid, 0)
    found = memo.get(pid, False)
    for p in chain:
        memo[p] = found
    return found


class Sampler:
    """Keeps the previous CPU counters: outsiders are measured between two samples."""

    def __init__(self, check_dir: str | None = None, busy: float = BUSY,
                 cgroup: str | None = None) -> None:
        self.check_dir, self.busy, self.cgroup = check_dir, busy, cgroup
        self.ticks: dict[int, int] = {}
        self.t = time.monotonic()
        self.hz = os.sysconf("SC_CLK_TCK")

    def outsiders(self) -> int:
        now = time.monotonic()
        parents, ticks = {}, {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                found = _stat(name)
                if found is not None:
                    parents[int(name)], ticks[int(name)] = found
        elapsed = max(now - self.t, 1e-3) * self.hz
        busy = [pid for pid, used in ticks.items()
                if pid in self.ticks and (used - self.ticks[pid]) / elapsed >= self.busy]
        self.ticks, self.t = ticks, now
        memo: dict[int, bool] = {os.getpid(): True}
        return sum(not _is_qpy(pid, parents, memo) for pid in busy)

    def sample(self) -> dict:
        total, used = memory()
        return {"cores": cores(), "mem_total": total, "mem_used": used,
                "load": round(os.getloadavg()[0], 2), "disk": disk(self.check_dir),
                "outsiders": self.outsiders(), "host": os.uname().nodename,
                "memory_limit": cgroups.node_memory_mode(self.cgroup), "tools": tools()}


def main() -> None:
    interval = float(sys.argv[1])
    check_dir, cgroup = ([arg or None for arg in sys.argv[2:4]] + [None, None])[:2]
    sampler = Sampler(check_dir, cgroup=cgroup)
    while True:
        line = json.dumps(sampler.sample(), separators=(",", ":")) + "\n"
        os.write(1, line.encode())
        readable, _, _ = select.select([0], [], [], interval)
        if readable and not os.read(0, 4096):
            return  # the multiuser is gone


if __name__ == "__main__":
    main()
