"""The job launcher: starts, watches and kills jobs on one node. Standard library only.

The master runs one launcher per node (``python3 -I -S -u -c BOOT RUN_DIR``, its source and
those of ``qpy/limits.py`` and ``qpy/cgroups.py`` sent down stdin first: locally as a
child, remotely at the end of an ssh session) and talks to it in JSON lines on
stdin/stdout. Each job runs under a *supervisor*, a process forked by the launcher that,
for each job it is given:

* leaves the launcher's session, so the job outlives the launcher and the master;
* becomes a child subreaper, so every descendant of the job, even one that called
  ``setsid``, stays below it and can be found and killed;
* applies the job's limits (``qpy/limits.py``): pins itself to the job's CPUs and enters
  the job's memory cgroup, so the job inherits both, or else watches the job's memory;
* forks the job as a session leader running ``SHELL -c COMMAND`` in its directory, in
  the user's login shell (``login_shell``);
* records itself in its slot of ``RUN_DIR/slots`` (job, PID and start time) before the job
  starts, and the job's exact wait status in the same slot once the job's main process
  ends, with the CPU time and peak memory of every process of the tree it reaped; then it
  kills what the job left behind;
* enforces the job's wall-time limit with its own timer, so the limit holds while the
  launcher or the master is gone: at the limit the tree gets SIGTERM, then SIGKILL after
  the grace period, and the exit record says ``limit``.

A supervisor that is done with a job (recorded, the launcher told, the leftovers killed,
its CPUs unpinned) tells the launcher so and waits for another: no fork per job. On this
kind of machine (a VM where a page fault costs ~9 us) forking the launcher and the
copy-on-write faults of the new process cost more than the rest of a job's start. The
launcher keeps ``IDLE_KEPT`` of them waiting and ends the others (their inbox closed),
so a node that once ran many jobs at once does not keep a supervisor for each.

Slots are fixed 256-byte records of one file, overwritten in place with single ``pwrite``
calls and reused: starting a job creates no file besides its own output files, because on
a busy disk creating and deleting files is what a job start costs most.

The launcher learns of a supervisor's end through a pidfd, which works for supervisors a
previous launcher started too: that is how a restarted master re-adopts running jobs with
no polling. Killing passes SIGTERM to the whole tree and escalates to SIGKILL after the
job's grace period: the launcher asks its own supervisors with a ``kill`` line on their
inbox pipe (in order with their start ops, so a kill meant for a job that has just ended
cannot reach the next job of the same supervisor), and a previous launcher's with SIGTERM
(those end after their job: their inbox is gone).

An interactive job (``qpy connect``) gets a private directory ``RUN_DIR/sJOB`` where its
session program (``session_node.py``) writes its state; the launcher watches those
directories with inotify and sends each new state on (``SessionWatch``), also for jobs it
adopts, and removes the directory when the job's slot is freed.

The protocol is one JSON object per line, ops on stdin and events on stdout; ``OPS`` and
``EVENTS`` below are its schema (the fields each must carry), checked by the launcher for
ops and by the master (``launcher_link``) for events:

========  ===================================  ========================================
op        fields                               what the launcher does
========  ===================================  ========================================
env       id, env                              keeps a submission environment
start     job, cmd, cwd, env_id, grace, vars,  runs the job under a supervisor, with the
          out, err, umask, limit, limits       submitter's umask (limit: seconds of wall
          [, session]                          time, or null), within limits (cores,
                                               mem, cgroup, rlimit_as, cpu_lock: see
                                               qpy/limits.py); a job whose slot already
                                               holds its own end: that end is reported
                                               as ``ended``, nothing runs; with
                                               session: an interactive job (below)
kill      job                                  SIGTERM to the tree, SIGKILL after grace
adopt     job                                  watches a job an earlier launcher started
forget    job                                  frees the job's slot: its end is recorded
sweep     keep, ask                            kills and frees every job not in keep;
                                               for each job in ask, a ``fate`` first
reap      tag, grace                           ends (SIGTERM, SIGKILL after grace) this
                                               user's processes in this node's network
                                               namespace whose environment holds
                                               QPY_RUN_TAG=tag: what a multi-node job
                                               started here over ssh (``reap_marked``)
ping                                           nothing: the master is still there
========  ===================================  ========================================

========  ===================================  ========================================
event     fields                               meaning
========  ===================================  ========================================
ready     pid                                  ops are read from now on
started   job, pid, t                          the supervisor has the job (t: start)
ended     job, t_end; exit or signal, or       the job's exact end; error and in (cwd,
          error and in; cpu, rss, limit;       out or err) when it could not start;
          mem_kill; killed; t                  cpu seconds and max RSS in KB of the
                                               tree; limit: its time limit ended it;
                                               mem_kill (peak GB) if ended for memory;
                                               killed: it ended after a kill op; t: its
                                               start, when a start op is answered with
                                               the end of a run that had ended already
lost      job, ran, reason                     no end was recorded (ran: it had started)
fate      job, ran; t, and an end as for       what became of a run the master gave up
          ended (if it had ended)              on: never started (ran false), ended
                                               (the slot kept until ``forget``), or
                                               still running (killed now, no end)
session   job, state, idle                     an interactive job's session changed
error     text, op                             an op could not be handled
========  ===================================  ========================================

The master sends ``ping`` every few seconds. A launcher that hears nothing for
``LINK_TIMEOUT`` seconds takes its master link as gone (a cut network leaves an ssh
session open on the node with nobody at the other end) and exits, as it does when its
stdin closes: its jobs do not need it (their supervisors record their ends in the slots),
its spare supervisor ends with it, and so does its ssh session.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import json
import os
import pwd
import selectors
import signal
import stat
import struct
import sys
import time
from collections.abc import Callable

if __name__ == "__main__":  # run by its boot (qpy/ssh.py), which put qpy/limits.py here
    import limits
else:
    from qpy import limits

OPS = {
    "env": ("id", "env"),
    "start": ("job", "cmd", "cwd", "env_id", "grace", "vars", "out", "err", "umask",
              "limit", "limits"),
    "kill": ("job",),
    "adopt": ("job",),
    "forget": ("job",),
    "sweep": ("keep", "ask"),
    "reap": ("tag", "grace"),
    "ping": (),
}
EVENTS = {
    "ready": ("pid",),
    "started": ("job", "pid", "t"),
    "ended": ("job", "t_end"),
    "lost": ("job", "ran", "reason"),
    "fate": ("job", "ran"),
    "error": ("text", "op"),
    "session": ("job", "state", "idle"),
}
LINK_TIMEOUT = 30.0  # seconds without a line from the master: the link is gone
IDLE_KEPT = 4  # idle supervisors a launcher keeps for its next jobs (~2 MB each)
PR_SET_CHILD_SUBREAPER = 36
TRACE = os.environ.get("QPY_TRACE")  # bench/latency.py --trace: as qpy/trace.py


def trace(label: str) -> None:
    """One timestamp line for the latency bench's trace (nothing unless QPY_TRACE)."""
    if TRACE:
        fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{time.monotonic_ns()} {os.getpid()} {label}\n".encode())
        os.close(fd)
SH = "/bin/sh"
# Login shells that read sh syntax: what qpy writes into command lines (``exec ARGV``,
# ``. FILE;``) and what users expect of ``qpy sub 'LINE'``. Others (csh, tcsh, fish, ...)
# would misread it, so their users' jobs run in /bin/sh.
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "ksh93", "mksh", "lksh", "pdksh",
                          "oksh", "zsh", "yash", "posh"})
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded once: a dlopen in each forked child costs


def login_shell() -> str:
    """The shell jobs run in: the user's login shell from the password database of this
    node, as ``ssh node COMMAND`` would use, if it is an sh-compatible shell that can be
    run here; else /bin/sh (no shell, ``nologin``, csh, fish, ...). Run as ``SHELL -c``,
    not as a login shell: the job has the submitting shell's environment, which a
    login shell's profile would partly overwrite."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        return SH
    if os.path.isabs(shell) and os.path.basename(shell) in POSIX_SHELLS \
            and os.access(shell, os.X_OK):
        return shell
    return SH


def checked_op(op: dict) -> dict:
    """An op that fits ``OPS``; ValueError naming what is wrong otherwise."""
    missing = [f for f in OPS.get(op.get("op"), ()) if f not in op]
    if op.get("op") not in OPS or missing:
        raise ValueError(f"op {op.get('op')!r} is unknown or lacks {missing}")
    return op


def ended_by_itself(result: dict | None) -> bool:
    """Whether a slot's end is the job's own: not a signal after a kill op (a run the
    master gave up on and qpy killed is not finished, so the job may run again)."""
    return result is not None and not (result.get("killed") and "signal" in result)


def emit(event: dict) -> None:
    """One event line to the master."""
    write_all(1, (json.dumps(event, separators=(",", ":")) + "\n").encode())


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def proc_start(pid: int) -> int | None:
    """Start time of a process in clock ticks: tells a live supervisor from a reused PID."""
    try:
        stat = limits.read_proc(f"/proc/{pid}/stat")
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc (cheap: no full process-table scan)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            found.extend(int(x) for x in limits.read_proc(f"/proc/{pid}/task/{tid}/children")
                         .split())
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    found, todo = [], children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children(p))
    return found


SLOT = 256
HALF = SLOT // 2
BLANK = b" " * SLOT


def parse_slot(record: bytes) -> tuple[tuple[int, int, int, float] | None, dict | None]:
    """(job, supervisor PID, its start time, t_start) and the exit record of one slot, as
    far as written; (None, None) for a free slot."""
    try:
        job, pid, start, t = record[:HALF].decode().split()[:4]
        head = (int(job), int(pid), int(start), float(t))
    except ValueError:
        return None, None
    try:
        result = json.loads(record[HALF:].decode()) if record[HALF:].strip() else None
    except ValueError:
        result = None
    return head, result if isinstance(result, dict) else None


def padded(text: str, size: int) -> bytes:
    data = text.encode()
    if len(data) >= size:
        raise ValueError(f"slot record too long: {text[:60]!r}")
    return data + b" " * (size - len(data) - 1) + b"\n"


class StartError(Exception):
    """The job cannot start: ``where`` (cwd, out or err) failed with ``why``. Only these
    short words go in the slot; the master, which knows the paths, words the reason."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


NOT_REGULAR = {stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device",
               stat.S_IFBLK: "a device", stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}
OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def check_output(st: os.stat_result, name: str, which: str) -> None:
    """StartError unless ``st`` is a file the job may write its output into: a regular
    file of this user's with no other name. In a directory others can write to, anything
    else is a trap: a symbolic link or a second hard link would make the job overwrite
    another file of the user's, a FIFO would hang it, another user's file would receive
    its output."""
    kind = NOT_REGULAR.get(stat.S_IFMT(st.st_mode))
    if kind is not None or not stat.S_ISREG(st.st_mode):
        raise StartError(which, f"{name} is {kind or 'not a regular file'}")
    if st.st_uid != os.getuid():
        raise StartError(which, f"{name} belongs to another user (uid {st.st_uid})")
    if st.st_nlink > 1:
        raise StartError(which, f"{name} has {st.st_nlink} hard links")


def open_output(path: str, which: str) -> int:
    """Open (creating or truncating) the job's output file ``path`` for writing, safely in
    a directory others can write to: no symbolic link is followed (O_NOFOLLOW), a FIFO
    cannot block the open (O_NONBLOCK), and the file is checked before (so nothing that
    is not ours is opened at all) and after opening (on the descriptor itself, so a swap
    in between is caught), and truncated only then. New files get mode 0666 less the
    umask."""
    name = os.path.basename(path)
    try:
        check_output(os.lstat(path), name, which)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartError(which, exc.strerror) from None
    try:
        fd = os.open(path, OUTPUT_FLAGS, 0o666)
    except OSError as exc:
        raise StartError(which, f"{name} is a symbolic link" if exc.errno == errno.ELOOP
                         else exc.strerror) from None
    try:
        check_output(os.fstat(fd), name, which)
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise StartError(which, exc.strerror) from None
    except StartError:
        os.close(fd)
        raise
    return fd


class Inbox:
    """The pipe a supervisor gets its ops on, read in lines: a job's start op when idle,
    ``kill`` while the job runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def line(self, wait: bool = True) -> bytes | None:
        """The next line; None at the end of the pipe (or, unless ``wait``, when no whole
        line has come yet)."""
        while b"\n" not in self.buf:
            if not wait or not self.read_some():
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read_some(self) -> bytes | None:
        """Read what has come (b"": the end; None: nothing yet, non-blocking)."""
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return None
        self.buf += chunk
        return chunk


class Supervisor:
    """Runs in a forked child: prepared while idle, then owns one job at a time to its
    recorded end, and waits for the next (a fork per job costs more than the job's start
    on a machine where page faults are dear)."""

    def __init__(self, slots: int, notify: int, inbox: int, shell: str) -> None:
        self.slots = slots
        self.shell = shell
        self.notify = notify
        self.inbox = Inbox(inbox)
        self.op: dict = {}
        self.offset = 0
        self.grace = 10.0
        self.job_pid = 0
        self.killing = False
        self.limit_hit = False  # the job's time limit ended it
        self.reaped = False  # the job's main process has ended
        self.devnull = -1
        self.limits: limits.JobLimits | None = None
        self.me = ""  # "PID START-TIME" of this supervisor, for its slot
        self.cpus: set[int] = set()  # the CPUs it may use when no job pins it
        self.cgroups = b""  # its cgroups, where it must be to wait for another job

    def prepare(self) -> None:
        """Everything that does not depend on the job, done before the job is known."""
        os.setsid()
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the job come here
        keep = sorted((self.notify, self.slots, self.inbox.fd))
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 16)
        self.devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(self.devnull, fd)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        self.me = f"{os.getpid()} {proc_start(os.getpid())}"
        self.cpus = os.sched_getaffinity(0)
        self.cgroups = limits.read_proc("/proc/self/cgroup")
        # SIGTERM stays blocked, as forked, until the job's process group can be signalled

    def serve(self) -> None:
        """Run each job sent until the inbox ends (the launcher is gone), then exit."""
        while True:
            line = self.inbox.line()
            if line is None:
                os._exit(0)
            if line == b"kill":  # for the last job, sent before the launcher knew it ended
                continue
            trace("supervisor: start op")
            self.op = json.loads(line)
            self.offset = int(self.op["slot"]) * SLOT
            self.grace = float(self.op.get("grace", 10.0))
            self.run()
            self._reset()

    def _message(self) -> bool:
        """Lines from the launcher while the job runs: ``kill``. False at EOF."""
        chunk = self.inbox.read_some()
        while (line := self.inbox.line(wait=False)) is not None:
            if line == b"kill":
                self._on_term()
        return chunk != b""

    def _reset(self) -> None:
        """Ready for another job, as a freshly prepared supervisor would be, then tell the
        launcher so (its job number, negated). One that cannot be ends instead: left in
        another cgroup by a job that had one (a v1 job cgroup is left for the user's,
        where an idle supervisor must not stay), or no launcher to take more jobs."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # drops a pending one: for this job
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.killing = self.limit_hit = self.reaped = False
        moved = self.limits is not None and self.limits.cgroup is not None
        self.limits = None
        gc.collect()
        try:
            os.sched_setaffinity(0, self.cpus)
            os.chdir("/")
            if moved and limits.read_proc("/proc/self/cgroup") != self.cgroups:
                os._exit(0)
            os.write(self.notify, f"-{self.op['job']}\n".encode())
        except OSError:
            os._exit(0)

    def run(self) -> None:
        """Run one job to its recorded end. A job that could not start ends the
        supervisor (os._exit)."""
        me = os.getpid()
        os.pwrite(self.slots, padded(f"{self.op['job']} {self.me} {self.op['t']}", HALF),
                  self.offset)
        try:
            out, err = self._open_outputs()
            trace("supervisor: outputs open")
        except StartError as exc:
            self._record({"error": exc.why, "in": exc.where})
            self._tell_launcher()
            os._exit(0)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGALRM, self._on_alarm)
        self.limits = limits.JobLimits(self.op["limits"], int(self.op["job"]),
                                       lambda: descendants(me))
        self.limits.before_spawn()
        self.job_pid = self._spawn_job(self.devnull, out, err)
        self.limits.after_spawn()
        trace("supervisor: job spawned")
        self._arm_limit()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a waiting kill now
        os.set_blocking(self.inbox.fd, False)
        self._message()  # a kill sent before the job existed
        os.close(out)
        os.close(err)
        status = self._wait_job()
        self.reaped = True
        trace("supervisor: job reaped")
        if not self.killing:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the limit no longer applies
        code = os.waitstatus_to_exitcode(status)
        result = {"exit": code} if code >= 0 else {"signal": -code}
        if self.limit_hit:
            result["limit"] = 1
        elif self.killing:  # a kill op: not an end of the job's own (ended_by_itself)
            result["killed"] = 1
        result.update(self.limits.verdict())
        self._record(result, usage=True)
        if self.killing:  # what is left gets the rest of its grace, and holds the cores
            self._clean_up()
            self._record(result, usage=True)  # now with the whole tree's usage
            self._tell_launcher()
        else:
            self._tell_launcher()
            trace("supervisor: launcher told")
            self._clean_up()
        self.limits.close()
        os.set_blocking(self.inbox.fd, True)

    def _open_outputs(self) -> tuple[int, int]:
        try:
            os.chdir(self.op["cwd"])
        except OSError as exc:
            raise StartError("cwd", exc.strerror) from None
        os.umask(int(self.op["umask"]))  # the job's too: it inherits it
        out = open_output(self.op["out"], "out")
        return out, open_output(self.op["err"], "err")

    def _spawn_job(self, stdin: int, out: int, err: int) -> int:
        """Start the job as a session leader with default signal handling.

        posix_spawn (vfork-like) runs no Python in the child, so a job starts in a fraction
        of what a second fork of this interpreter would cost.
        """
        try:
            return os.posix_spawn(
                self.shell, [os.path.basename(self.shell), "-c", self.op["cmd"]],
                self.op["env"], setsid=True,
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                              (os.POSIX_SPAWN_DUP2, err, 2)],
                setsigmask=(),
                setsigdef=(signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP,
                           signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            self._record({"error": f"cannot start {self.shell}: {exc.strerror}"})
            os._exit(0)

    def _wait_job(self) -> int:
        """Reap everything (orphans come to us) until the job's main process ends, while
        the job's memory is watched."""
        return self.limits.wait(self.job_pid, lambda: self._signal_tree(signal.SIGKILL),
                                self.inbox.fd, self._message)

    def _signal_tree(self, sig: int) -> None:
        try:
            os.killpg(self.job_pid, sig)
        except OSError:
            pass
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def _on_term(self, *_: object) -> None:
        if self.killing:
            return
        self.killing = True
        self._signal_tree(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, max(self.grace, 0.001), 0.5)

    def _arm_limit(self) -> None:
        """The job's wall-time limit, counted from its start, on this process's timer."""
        limit = self.op.get("limit")
        if limit:
            left = float(limit) - (time.time() - float(self.op["t"]))
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def _on_alarm(self, *_: object) -> None:
        """During a kill: the grace period is over. Before: the time limit is reached."""
        if self.killing:
            self._signal_tree(signal.SIGKILL)
        elif not self.reaped:
            self.limit_hit = True
            self._on_term()

    def _tell_launcher(self) -> None:
        """Report the end at once, before cleaning up and exiting (the pidfd would only
        fire after that); a launcher that is gone simply misses it and uses the pidfd.
        The job's CPUs are free from now on: the next job may take them."""
        if self.limits is not None:
            self.limits.release_cpus()
        try:
            os.write(self.notify, f"{self.op['job']}\n".encode())
        except OSError:
            pass

    def _record(self, result: dict, usage: bool = False) -> None:
        """Write the exit record in one pwrite into the second half of the slot (again,
        with the usage of what has been reaped by then, if called again)."""
        result.setdefault("t_end", time.time())
        if "error" in result:  # the record must fit its half slot
            result["error"] = result["error"][:64]
        if usage:  # every process of the tree was reaped here or below: the subreaper
            result["cpu"] = round(self.limits.cpu, 3)
            result["rss"] = self.limits.rss  # KB, the largest process of the tree
        os.pwrite(self.slots, padded(json.dumps(result, separators=(",", ":")), HALF),
                  self.offset + HALF)

    def _clean_up(self) -> None:
        """The job is over: whatever it left running goes too, so its cores are really free.

        During a kill, the leftovers first get the rest of the grace period (the armed timer
        escalates to SIGKILL); otherwise they are killed at once.
        """
        while self.killing and descendants(os.getpid()):
            try:
                self.limits.reap(0, block=True)
            except ChildProcessError:
                break
        signal.setitimer(signal.ITIMER_REAL, 0)
        for _ in range(100):
            left = descendants(os.getpid())
            if not left:
                break
            self._signal_tree(signal.SIGKILL)
            while True:
                try:
                    self.limits.reap(0, block=True)
                except ChildProcessError:
                    break


IN_NONBLOCK, IN_CLOEXEC, IN_MOVED_TO = 0o4000, 0o2000000, 0x80
INOTIFY_EVENT = 16  # int wd, uint32 mask, cookie, len; then len bytes of name


class SessionWatch:
    """The session directories of interactive jobs, watched with inotify: each time a
    session program renames a new ``state`` into place, it goes to the master."""

    def __init__(self, run_dir: str, sel: selectors.BaseSelector) -> None:
        self.run_dir = run_dir
        self.fd = LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        self.jobs: dict[int, int] = {}  # watch descriptor -> job
        # the jobs with a session directory, so that freeing a batch job's slot costs no
        # stat: those of earlier launchers are here now, the rest come from ``started``
        self.dirs = {int(name[1:]) for name in os.listdir(run_dir)
                     if name[:1] == "s" and name[1:].isdigit()}
        if self.fd >= 0:
            sel.register(self.fd, selectors.EVENT_READ, "sessions")

    def path(self, job: int) -> str:
        return os.path.join(self.run_dir, f"s{job}")

    def started(self, op: dict) -> None:
        """A start op: an interactive job gets its directory, fresh, and is watched."""
        if op.get("session"):
            path = self.path(int(op["job"]))
            os.makedirs(path, mode=0o700, exist_ok=True)
            self.dirs.add(int(op["job"]))
            for name in ("state", "status"):
                try:
                    os.unlink(os.path.join(path, name))
                except FileNotFoundError:
                    pass
            self.watch(int(op["job"]))

    def watch(self, job: int) -> None:
        """Watch the job's session directory if it has one, and report its state now."""
        if self.fd < 0 or job not in self.dirs or job in self.jobs.values():
            return
        wd = LIBC.inotify_add_watch(self.fd, os.fsencode(self.path(job)), IN_MOVED_TO)
        if wd >= 0:
            self.jobs[wd] = job
        self.report(job)

    def read(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        seen = set()
        while len(data) >= INOTIFY_EVENT:
            wd, _, _, size = struct.unpack("iIII", data[:INOTIFY_EVENT])
            name, data = data[INOTIFY_EVENT:INOTIFY_EVENT + size], data[INOTIFY_EVENT + size:]
            if name.rstrip(b"\0") == b"state" and wd in self.jobs:
                seen.add(self.jobs[wd])
        for job in seen:
            self.report(job)

    def report(self, job: int) -> None:
        """The job's state as its session program last wrote it; one that does not parse
        is left out (the directory is the user's, but the launcher must go on)."""
        try:
            with open(os.path.join(self.path(job), "state")) as f:
                state = json.loads(f.read())
            idle = max(0.0, time.time() - float(state.get("since") or time.time()))
        except (OSError, ValueError, TypeError, AttributeError):
            return
        emit({"ev": "session", "job": job, "state": state, "idle": round(idle, 1)})
        trace("launcher: session state sent")

    def remove(self, job: int) -> None:
        """The job's slot is free: stop watching, and remove its session directory."""
        for wd in [wd for wd, j in self.jobs.items() if j == job]:
            LIBC.inotify_rm_watch(self.fd, wd)
            del self.jobs[wd]
        if job in self.dirs:
            import shutil

            self.dirs.discard(job)
            shutil.rmtree(self.path(job), ignore_errors=True)


class Slots:
    """The slots file of a run directory: which slot holds which job (those not yet
    forgotten, some started by earlier launchers), and the free ones. Written by
    supervisors (their own slot) and freed here once the master has the end."""

    def __init__(self, run_dir: str) -> None:
        path = os.path.join(run_dir, "slots")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.of: dict[int, int] = {}
        self.free: list[int] = []
        self.scan()

    def scan(self) -> None:
        """Learn which slots hold jobs not yet forgotten (started by earlier launchers)."""
        size = os.fstat(self.fd).st_size // SLOT
        data = os.pread(self.fd, size * SLOT, 0)
        self.of, self.free = {}, []
        for i in range(size):
            head, _ = parse_slot(data[i * SLOT:(i + 1) * SLOT])
            if head is None:
                self.free.append(i)
            else:
                self.of[head[0]] = i
        self.free.reverse()

    def take(self, job: int, pid: int, start: int | None) -> int:
        """A free slot, claimed for ``job`` at once by its supervisor ``pid`` (started at
        ``start``, in clock ticks), which writes the real head:
        another launcher of this user on this node (one still ending, or one whose session
        was cut) may hold an older picture of the file, so the claim happens under a lock
        and only on a slot that really is blank."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            while self.free and os.pread(self.fd, SLOT, self.free[-1] * SLOT) != BLANK:
                self.free.pop()
            slot = self.free.pop() if self.free else os.fstat(self.fd).st_size // SLOT
            claim = f"{job} {pid} {start} 0"  # t 0: the job has not started yet
            os.pwrite(self.fd, padded(claim, HALF) + b" " * HALF, slot * SLOT)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.of[job] = slot
        return slot

    def read(self, job: int) -> tuple[tuple[int, int, int, float] | None, dict | None]:
        """The head and exit record of ``job``'s slot, (None, None) if it has none."""
        slot = self.of.get(job)
        if slot is None:
            return None, None
        head, result = parse_slot(os.pread(self.fd, SLOT, slot * SLOT))
        return (head, result) if head is not None and head[0] == job else (None, None)

    def release(self, job: int) -> None:
        slot = self.of.pop(job, None)
        if slot is not None:
            os.pwrite(self.fd, BLANK, slot * SLOT)
            self.free.append(slot)


def fork_supervisor(slots_fd: int, notify_w: int, shell: str) -> tuple[int, int]:
    """A prepared supervisor waiting on a pipe for its job."""
    inbox_r, inbox_w = os.pipe()
    gc.freeze()  # keep the collector off the parent's objects: fewer copied pages per fork
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for the child
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    else:
        gc.disable()
        try:
            supervisor = Supervisor(slots_fd, notify_w, inbox_r, shell)
            supervisor.prepare()
            supervisor.serve()
        finally:
            os._exit(1)
    os.close(inbox_r)
    return pid, inbox_w


def reap(op: dict) -> None:
    """End what a multi-node job left on this node (``reap_marked``), in a grandchild
    of the launcher, so that the launcher goes on serving meanwhile."""
    tag, grace = str(op["tag"]), float(op["grace"])
    if not tag.isalnum():
        raise ValueError(f"bad run tag {tag[:40]!r}")
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:  # off the master's pipes: a launcher ending meanwhile ends
                null = os.open(os.devnull, os.O_RDWR)  # its ssh session at once
                os.dup2(null, 0)
                os.dup2(null, 1)
                reap_marked(tag, grace)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def marked(marker: bytes, netns: str) -> list[int]:
    """This user's processes in the network namespace ``netns`` (the node's: namespace
    nodes share one PID space) whose environment holds ``marker``. Those of other users
    cannot be read, and are not ours to end."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/net") != netns:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or not ours
            pass
    return found


def reap_marked(tag: str, grace: float) -> None:
    """SIGTERM to every process of a multi-node job's run on this node (its marker
    ``QPY_RUN_TAG=tag``), SIGKILL to what is left after ``grace`` seconds, waited for
    through pidfds (no polling); what they started meanwhile is found again."""
    marker, netns = f"QPY_RUN_TAG={tag}".encode(), os.readlink("/proc/self/ns/net")
    fds = []
    for pid in marked(marker, netns):
        try:
            fds.append(os.pidfd_open(pid))
            signal.pidfd_send_signal(fds[-1], signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    with selectors.DefaultSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                sel.unregister(key.fd)
    for pid in marked(marker, netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def end_event(slots: Slots, job: int) -> dict:
    """The event for the end of ``job`` as its slot tells it (ended, or lost)."""
    head, result = slots.read(job)
    if result is None and head is not None and not head[3]:  # its supervisor never got
        return {"ev": "lost", "job": job, "ran": False,  # the job (its launcher died)
                "reason": "the job was never started"}
    if result is None:
        return {"ev": "lost", "job": job, "ran": True,
                "reason": "its supervisor ended without recording an exit status"}
    return {"ev": "ended", "job": job, **result}


class Own:
    """The launcher's own supervisors: the spare (forked ahead, off the path of a start),
    those done with a job (the last one back gets the next job first), the inbox of
    each one that has a job, and the start time of each (read once, at its fork: a
    job's slot names its supervisor by PID and start time)."""

    def __init__(self, fork: Callable[[], tuple[int, int]],
                 sel: selectors.BaseSelector) -> None:
        self._fork, self.sel = fork, sel
        self.spare: tuple[int, int] | None = None
        self.idle: list[tuple[int, int]] = []  # (PID, inbox)
        self.inboxes: dict[int, int] = {}  # job -> the inbox of its supervisor
        self.starts: dict[int, int | None] = {}  # PID -> its start time in clock ticks

    def fork(self) -> tuple[int, int]:
        pid, inbox = self._fork()
        self.starts[pid] = proc_start(pid)
        return pid, inbox

    def pick(self) -> tuple[int, int, bool]:
        """A supervisor for a job: an idle one, else the spare, else a new one (PID,
        inbox, whether it was idle)."""
        if self.idle:
            return (*self.idle.pop(), True)
        pid, inbox = self.spare or self.fork()
        self.spare = None
        return pid, inbox, False

    def refill(self) -> None:
        """Fork the spare if there is none (only when no supervisor was idle)."""
        if self.spare is None:
            self.spare = self.fork()

    def kill(self, job: int) -> bool:
        """A ``kill`` line on the inbox of the job's supervisor, in order with its start
        ops, so a kill for its last job cannot reach the next; whether it is ours."""
        if job not in self.inboxes:
            return False
        try:
            write_all(self.inboxes[job], b"kill\n")
        except OSError:  # it is ending: its end comes anyway
            pass
        return True

    def done(self, job: int, pid: int) -> None:
        """The supervisor is done with ``job`` and waits for another, unless IDLE_KEPT
        already wait: then its inbox is closed, which ends it, and ``reap`` reaps it when
        its pidfd fires. A node that ran many jobs at once must not keep a supervisor
        for each."""
        inbox = self.inboxes.pop(job)
        if len(self.idle) < IDLE_KEPT:
            self.idle.append((pid, inbox))
            return
        os.close(inbox)
        try:
            self.sel.register(os.pidfd_open(pid), selectors.EVENT_READ, ("retired", pid))
        except ProcessLookupError:
            self.gone(pid, -1)

    def reap(self, key: selectors.SelectorKey) -> None:
        """A supervisor that ``done`` ended has ended."""
        self.sel.unregister(key.fd)
        os.close(key.fd)
        self.gone(key.data[1], -1)

    def ended(self, job: int, pid: int) -> None:
        """The supervisor of ``job`` ended."""
        self.gone(pid, self.inboxes.pop(job))

    def gone(self, pid: int, inbox: int) -> None:
        """A supervisor that ended: its inbox closed (if still open), the process reaped."""
        self.starts.pop(pid, None)
        if inbox >= 0:
            os.close(inbox)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


class Launcher:
    """The launcher's event loop: ops from stdin, job ends from pidfds."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.sel = selectors.DefaultSelector()
        self.watched: dict[int, tuple[int, int, bool]] = {}  # job -> (pidfd, pid, own child)
        self.reported: set[int] = set()
        self.buf = b""
        self.notify_r, self.notify_w = os.pipe()
        os.set_blocking(self.notify_r, False)
        self.slots = Slots(run_dir)
        self.forgotten: set[int] = set()
        self.envs: dict[int, dict[str, str]] = {}
        self.deferred: dict[int, dict] = {}  # job -> its start, waiting for its old run
        self.own = Own(self._fork, self.sel)
        self.shell = login_shell()  # once: the password database may be a network service
        self.sessions = SessionWatch(run_dir, self.sel)

    def serve(self) -> None:
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)
        self.sel.register(self.notify_r, selectors.EVENT_READ, "notify")
        emit({"ev": "ready", "pid": os.getpid()})
        self.own.refill()
        heard = time.monotonic()
        while True:
            ready = self.sel.select(max(0.0, heard + LINK_TIMEOUT - time.monotonic()))
            if not ready and time.monotonic() - heard >= LINK_TIMEOUT:
                return  # the master link is gone: jobs go on without this launcher
            for key, _ in ready:
                if key.data is None:
                    heard = time.monotonic()
                    if not self._read_ops():
                        return
                elif key.data == "notify":
                    self._notified()
                elif key.data == "sessions":
                    self.sessions.read()
                elif isinstance(key.data, tuple):
                    self.own.reap(key)
                elif self.watched.get(key.data, (None,))[0] == key.fd:  # not ended this batch
                    self._ended(key.data)

    def _read_ops(self) -> bool:
        try:
            chunk = os.read(0, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._handle(line)
        return True

    def _handle(self, line: bytes) -> None:
        try:
            op = checked_op(json.loads(line))
            handler = {"start": self.start, "kill": self.kill, "adopt": self.adopt,
                       "forget": self.forget, "env": self.env, "sweep": self.sweep,
                       "reap": reap, "ping": lambda op: None}[op["op"]]
            handler(op)
        except Exception as exc:  # one bad op must not end the launcher
            emit({"ev": "error", "text": f"{type(exc).__name__}: {exc}", "op": line[:200].decode(
                errors="replace")})

    def env(self, op: dict) -> None:
        """A submission environment, sent once and then named by jobs that share it."""
        self.envs[int(op["id"])] = op["env"]

    def start(self, op: dict) -> None:
        """Hand the job to the spare supervisor, then fork the next spare: the fork is
        not on the path from "start" to the job's first instruction."""
        trace("launcher: start op")
        job = int(op["job"])
        if job in self.watched or self._watch_slot(job):  # a requeued job whose old run
            self.deferred[job] = op  # still runs or ends: it goes first
            self.kill({"job": job})
            return
        head, result = self.slots.read(job)
        if head is not None and ended_by_itself(result):  # it ran here already (a run the
            emit({"ev": "ended", "job": job, "t": head[3], **result})  # master gave up on)
            return
        if head is not None and result is not None:  # a run qpy killed: this one replaces it
            self._free_slot(job)
        op["env"] = {**self.envs.get(op.get("env_id"), {}), **op.get("vars", {})}
        limits.prepare_start(op)
        op["t"] = t_start = time.time()
        pid = self._hand(job, op)
        self._watch(job, pid, own=True)
        emit({"ev": "started", "job": job, "pid": pid, "t": t_start})
        self.own.refill()

    def _hand(self, job: int, op: dict) -> int:
        """Give the start op to the supervisor last done with a job, else to the spare
        (forked only when none is idle), once the job's slot is claimed with its PID and
        an interactive job has its session directory: the supervisor's PID."""
        while True:
            pid, inbox, was_idle = self.own.pick()
            op["slot"] = self.slots.take(job, pid, self.own.starts[pid])
            self.sessions.started(op)
            try:
                write_all(inbox, json.dumps(op, separators=(",", ":")).encode() + b"\n")
            except OSError:  # it ended (while idle): the claim goes, another one gets it
                self.own.gone(pid, inbox)
                self._free_slot(job)
                if was_idle:
                    continue
                raise
            self.own.inboxes[job] = inbox
            return pid

    def _fork(self) -> tuple[int, int]:
        return fork_supervisor(self.slots.fd, self.notify_w, self.shell)

    def _watch(self, job: int, pid: int, own: bool) -> bool:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self.watched[job] = (pidfd, pid, own)
        self.sel.register(pidfd, selectors.EVENT_READ, job)
        return True

    def adopt(self, op: dict) -> None:
        """Take over a job a previous launcher started: report its end when it comes."""
        job = int(op["job"])
        if job in self.watched:
            return
        if job not in self.slots.of:
            self.slots.scan()  # a supervisor forked just before the old launcher died
        head, result = self.slots.read(job)
        if head is None:
            emit({"ev": "lost", "job": job, "ran": False, "reason": "the job was never started"})
            return
        _, pid, start, t = head
        emit({"ev": "started", "job": job, "pid": pid, "t": t})
        self.sessions.watch(job)
        if result is None and proc_start(pid) == start and self._watch(job, pid, own=False):
            if proc_start(pid) == start:  # still the same process now that the pidfd holds it
                return
            self._unwatch(job)
        emit(end_event(self.slots, job))

    def sweep(self, op: dict) -> None:
        """Sent first to every new launcher: kill and free what this node still holds of
        jobs the master no longer runs (the node was declared down while they ran, or the
        master recorded their end but died before freeing the slot). For the jobs in
        ``ask`` (runs the master gave up on) it first tells what the slots say."""
        keep = {int(j) for j in op["keep"]}
        ask = {int(j) for j in op["ask"]} - keep
        self.slots.scan()
        for job in sorted(ask - set(self.slots.of)):
            emit({"ev": "fate", "job": job, "ran": False})
        for job in [j for j in self.slots.of if j not in keep and j not in self.watched]:
            head, result = self.slots.read(job)
            if self._watch_slot(job):
                self.reported.add(job)  # nobody wants to hear of its end
                self.forgotten.add(job)
                self.kill({"job": job})
            elif job not in ask or head is None or result is None:
                self._free_slot(job)
            if job in ask:  # an end stays in its slot until the master has recorded it
                emit({"ev": "fate", "job": job, "ran": bool(head and head[3]),
                      **({"t": head[3], **result} if head and result else {})})

    def _watch_slot(self, job: int) -> bool:
        """Watch the job's run if its slot shows it still running (a run this launcher did
        not start or adopt); whether it does."""
        head, result = self.slots.read(job)
        return head is not None and result is None and proc_start(head[1]) == head[2] \
            and self._watch(job, head[1], own=False)

    def kill(self, op: dict) -> None:
        """Our own supervisor of the job gets a ``kill`` line (``Own.kill``); one of an
        earlier launcher SIGTERM (found through the job's slot if not watched yet)."""
        job = int(op["job"])
        if self.own.kill(job):
            return
        entry = self.watched.get(job) or (self._watch_slot(job) and self.watched.get(job))
        if entry:
            try:
                signal.pidfd_send_signal(entry[0], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def forget(self, op: dict) -> None:
        """The master has recorded the end: the slot is free for another job."""
        job = int(op["job"])
        if job in self.watched:  # its supervisor is still cleaning up: free it at its exit
            self.forgotten.add(job)
            return
        self._free_slot(job)

    def _free_slot(self, job: int) -> None:
        self.sessions.remove(job)
        self.slots.release(job)

    def _unwatch(self, job: int) -> tuple[int, int, bool]:
        pidfd, pid, own = self.watched.pop(job)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        return pidfd, pid, own

    def _notified(self) -> None:
        """Supervisors that just recorded their job's exit."""
        try:
            data = os.read(self.notify_r, 1 << 16)
        except BlockingIOError:
            return
        trace("launcher: notified")
        for word in data.split():
            job = int(word)
            if job < 0 and -job in self.own.inboxes and -job in self.watched:  # done with it
                _, pid, _ = self._unwatch(-job)
                self.own.done(-job, pid)
                self._over(-job)
            elif job in self.watched and job not in self.reported and job not in self.deferred:
                self.reported.add(job)
                emit(end_event(self.slots, job))

    def _ended(self, job: int) -> None:
        """A supervisor ended (pidfd)."""
        _, pid, own = self._unwatch(job)
        if own:
            self.own.ended(job, pid)
        self._over(job)

    def _over(self, job: int) -> None:
        """The supervisor of ``job`` is done with it: its end reported if not yet, its slot
        freed if the master has the end, its next run started if one waits."""
        if job in self.deferred:  # the old run is over: the new one starts, unless the old
            self.reported.discard(job)  # one finished by itself (its end then answers it)
            self.forgotten.discard(job)
            op = self.deferred.pop(job)
            head, result = self.slots.read(job)
            if head is not None and ended_by_itself(result):
                emit({"ev": "ended", "job": job, "t": head[3], **result})
                return
            self._free_slot(job)
            self.start(op)
            return
        if job not in self.reported:
            emit(end_event(self.slots, job))
        self.reported.discard(job)
        if job in self.forgotten:
            self.forgotten.discard(job)
            self._free_slot(job)


def main() -> None:
    run_dir = sys.argv[1]
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limits.cgroups.prepare_launcher()
    Launcher(run_dir).serve()


if __name__ == "__main__":
    main()
