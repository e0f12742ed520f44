"""What a node enforces of a job's allocation: its cores and its memory. Standard library
only: it runs on the nodes, sent down the ssh session beside the launcher (with
``qpy/cgroups.py``, which it imports), and in-process where the launcher runs locally.

**Cores.** Each job's supervisor pins itself, and so the job it starts, to as many of the
node's CPUs as the job was granted (``sched_setaffinity``), distinct from the CPUs of
every other qpy job on the node, of every user. The CPUs are agreed on the node itself,
through one lock file every user may open (``cpu_lock`` in the ``nodes`` file, default
``/tmp/qpy-cpus.lock``, mode 0666): a supervisor holds a POSIX record lock on byte *i*
of it for each CPU *i* its job uses, until its job has ended. The kernel drops the locks
when the supervisor ends, even by SIGKILL, so nothing is left to clean up and nothing
depends on the master or the multiuser: a restarted master, a restarted multiuser and
the other users' launchers see the same locks. A node configured with more cores than it
has CPUs hands out CPUs that are already held once no free one is left. The job also gets
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` set to its core
count unless the user set them.

**Memory**, the best mechanism the node offers: the job's own memory cgroup
(``qpy/cgroups.py``), else a watchdog in the supervisor that samples the resident memory
of the job's whole process tree, more often as it nears the limit, and kills the tree with
SIGKILL when it passes the limit. A job ended for memory is recorded with the peak seen
(``mem_kill``, GB). ``rlimit_as=true`` in the ``nodes`` file adds ``ulimit -v``
(RLIMIT_AS) at the job's limit, an admin option that is off by default: it breaks programs
that map much more than they use.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import stat
import time
from collections.abc import Callable

if __name__ == "limits":  # loaded by the launcher's boot (qpy/ssh.py), after qpy/cgroups.py
    import cgroups
else:
    from qpy import cgroups

GB = 1024 ** 3
PAGE = os.sysconf("SC_PAGE_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CPU_LOCK = "/tmp/qpy-cpus.lock"
SAMPLE_MIN, SAMPLE_MAX = 0.05, 0.5  # seconds between two samples: near the limit, far off
_LIBC = ctypes.CDLL(None, use_errno=True)


# -- cores ---------------------------------------------------------------------------------


def prepare_start(op: dict) -> None:
    """The launcher's part of a start op: the thread variables the user did not set, and
    the RLIMIT_AS option around the command."""
    spec = op["limits"]
    for name in THREAD_VARS:
        op["env"].setdefault(name, str(spec["cores"]))
    if spec.get("rlimit_as"):
        op["cmd"] = f"ulimit -v {int(spec['mem'] * GB) // 1024} || exit 125\n{op['cmd']}"


def _open_lock(path: str) -> int:
    """The lock file, made if missing. An existing one is opened without O_CREAT: in a
    sticky directory such as /tmp, ``fs.protected_regular`` refuses O_CREAT on another
    user's file even when it exists."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        pass
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:  # another job made it meanwhile
        return os.open(path, flags)


def claim_cpus(count: int, path: str | None, job: int) -> tuple[int, list[int]]:
    """Lock ``count`` of this process's CPUs in the node's lock file: the open file (to
    keep open as long as the CPUs are used: closing it drops the locks) and the CPUs; (-1,
    []) if the file cannot be used, and the job is then not pinned."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        fd = _open_lock(path or CPU_LOCK)
    except OSError:
        return -1, []
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return -1, []
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o666:
        try:
            os.fchmod(fd, 0o666)  # the first user's umask must not lock the others out
        except OSError:
            pass
    here = _LIBC.sched_getcpu()  # the job is spawned here: no move if it may stay
    taken = []
    for cpu in sorted(allowed, key=lambda c: c != here):
        if len(taken) == count:
            break
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, cpu)
            taken.append(cpu)
        except OSError:
            pass
    if len(taken) < count:  # more cores handed out here than CPUs: share held ones
        held = [c for c in allowed if c not in taken]
        start = job % len(held) if held else 0
        taken += (held[start:] + held[:start])[:count - len(taken)]
    return fd, sorted(taken)


# -- memory: the watchdog ------------------------------------------------------------------


def read_proc(path: str) -> bytes:
    """A /proc file's contents in four system calls (``open()`` makes seven or more: the
    watchdog reads a few files per process several times a second)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:  # a /proc read may stop short of the end
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


def tree_rss(pids: list[int]) -> int:
    """Bytes resident of these processes (pages shared between them count in each)."""
    total = 0
    for pid in pids:
        try:
            total += int(read_proc(f"/proc/{pid}/statm").split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def next_sample(rss: int, limit: int) -> float:
    """Seconds to the next sample: SAMPLE_MAX below half the limit, then shorter, down to
    SAMPLE_MIN at the limit, so a job growing towards it is caught soon after it passes."""
    share = rss / limit if limit > 0 else 1.0
    if share < 0.5:
        return SAMPLE_MAX
    return max(SAMPLE_MIN, SAMPLE_MAX * 2 * (1 - share))


# -- one job -------------------------------------------------------------------------------


class JobLimits:
    """What a supervisor applies to its job: CPUs, and memory through a cgroup or the
    watchdog. ``spec`` is the start op's ``limits``: cores, mem (GB), cgroup, rlimit_as,
    cpu_lock."""

    def __init__(self, spec: dict, job: int, tree: Callable[[], list[int]]) -> None:
        self.limit = int(float(spec["mem"]) * GB)
        self.lock, self.cpus = claim_cpus(int(spec["cores"]), spec.get("cpu_lock"), job)
        self.cgroup = cgroups.job_cgroup(spec.get("cgroup"), job, self.limit)
        self.tree = tree  # the job's processes, for the watchdog
        self.peak = 0
        self.over = False
        self.cpu = 0.0  # CPU seconds and largest RSS (KB) of the processes reaped so far
        self.rss = 0

    def before_spawn(self) -> None:
        """Pin this supervisor (the job inherits it) and enter the job's cgroup."""
        if self.cpus:
            try:
                os.sched_setaffinity(0, self.cpus)
            except OSError:  # a CPU gone offline: the job runs unpinned
                pass
        if self.cgroup is not None:
            try:
                self.cgroup.enter()
            except OSError:  # e.g. a v2 cgroup out of this process's reach
                self.cgroup.remove()
                self.cgroup = None

    def release_cpus(self) -> None:
        """The job is over: its CPUs are free for the next job."""
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1

    def after_spawn(self) -> None:
        if self.cgroup is not None:
            try:
                self.cgroup.leave()
            except OSError:
                pass

    def wait(self, job_pid: int, kill: Callable[[], None], inbox: int,
             message: Callable[[], bool]) -> int:
        """Reap every child (orphans come to the supervisor) until the job's main process
        ends, and return its wait status; meanwhile sample the tree (watchdog) or wait for
        the cgroup's OOM event, and ``kill`` the tree when it is over its memory. When
        ``inbox`` is readable, ``message`` reads it (False: it is closed)."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
        events = self.cgroup.events if self.cgroup is not None else -1
        watched = [fd for fd in (wake_r, events, inbox) if fd >= 0]
        due = time.monotonic() + SAMPLE_MIN  # not at once: the job is still starting
        try:
            while True:
                status = self.reap(job_pid)
                if status is not None:
                    return status
                timeout = None
                if self.cgroup is None and not self.over:
                    timeout = max(0.0, due - time.monotonic())
                    if timeout == 0.0:
                        due = time.monotonic() + self._sample(kill)
                        continue
                readable, _, _ = select.select(watched, [], [], timeout)
                if wake_r in readable:
                    os.read(wake_r, 4096)
                if inbox in readable and not message():
                    watched.remove(inbox)
                if events in readable and not self.over:
                    os.read(events, 8)
                    self.over = True
                    kill()
        finally:  # the supervisor may run another job: nothing of this one stays open
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)

    def reap(self, job_pid: int, block: bool = False) -> int | None:
        """Reap what has ended, counting its usage; the job's wait status if it is among
        them (0 if nothing is left to wait for), else None. With ``block``: one process,
        waited for (ChildProcessError if none is left)."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                if block:
                    raise
                return 0
            if pid == 0:
                return None
            # a process's usage includes its reaped descendants', as RUSAGE_CHILDREN
            # would, but only this job's: the supervisor may have run others before
            self.cpu += usage.ru_utime + usage.ru_stime
            self.rss = max(self.rss, usage.ru_maxrss)
            if pid == job_pid or block:
                return status

    def _sample(self, kill: Callable[[], None]) -> float:
        rss = tree_rss(self.tree())
        self.peak = max(self.peak, rss)
        if rss > self.limit:
            self.over = True
            kill()
        return next_sample(rss, self.limit)

    def verdict(self) -> dict:
        """For the job's exit record: ``mem_kill``, the peak in GB, if it was ended for
        memory."""
        if self.cgroup is not None and (self.over or self.cgroup.oom_killed()):
            self.over, self.peak = True, self.cgroup.peak()
        return {"mem_kill": round(self.peak / GB, 3)} if self.over else {}

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
