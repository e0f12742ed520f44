"""The job launcher: starts, watches and kills jobs on one node. Standard library only.

The master runs one launcher per node (``python3 -S launcher.py RUN_DIR``: locally as a
child, remotely over ssh) and talks to it in JSON lines on stdin/stdout. For each job the
launcher forks a *supervisor* that:

* leaves the launcher's session, so the job outlives the launcher and the master;
* becomes a child subreaper, so every descendant of the job, even one that called
  ``setsid``, stays below it and can be found and killed;
* forks the job as a session leader running ``/bin/sh -c COMMAND`` in its directory;
* records itself in its slot of ``RUN_DIR/slots`` (job, PID and start time) before the job
  starts, and the job's exact wait status in the same slot once the job's main process
  ends; then it kills what the job left behind.

Slots are fixed 256-byte records of one file, overwritten in place with single ``pwrite``
calls and reused: starting a job creates no file besides its own output files, because on
a busy disk creating and deleting files is what a job start costs most.

The launcher learns of a supervisor's end through a pidfd, which works for supervisors a
previous launcher started too: that is how a restarted master re-adopts running jobs with
no polling. Killing sends SIGTERM to the supervisor, which passes it to the whole tree and
escalates to SIGKILL after the job's grace period.

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
start     job, cmd, cwd, env_id, grace, vars,  runs the job under a supervisor; with
          out, err [, session]                 session: an interactive job (below)
kill      job                                  SIGTERM to the tree, SIGKILL after grace
adopt     job                                  watches a job an earlier launcher started
forget    job                                  frees the job's slot: its end is recorded
sweep     keep                                 kills and frees every job not in keep
========  ===================================  ========================================

========  ===================================  ========================================
event     fields                               meaning
========  ===================================  ========================================
ready     pid                                  ops are read from now on
started   job, pid, t                          the supervisor has the job (t: start)
ended     job, t_end; exit or signal, or       the job's exact end; error and in (cwd,
          error and in                         out or err) when it could not start
lost      job, ran, reason                     no end was recorded (ran: it had started)
session   job, state, idle                     an interactive job's session changed
error     text, op                             an op could not be handled
========  ===================================  ========================================
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import struct
import sys
import time

OPS = {
    "env": ("id", "env"),
    "start": ("job", "cmd", "cwd", "env_id", "grace", "vars", "out", "err"),
    "kill": ("job",),
    "adopt": ("job",),
    "forget": ("job",),
    "sweep": ("keep",),
}
EVENTS = {
    "ready": ("pid",),
    "started": ("job", "pid", "t"),
    "ended": ("job", "t_end"),
    "lost": ("job", "ran", "reason"),
    "error": ("text", "op"),
    "session": ("job", "state", "idle"),
}
PR_SET_CHILD_SUBREAPER = 36
TRACE = os.environ.get("QPY_TRACE")  # bench/latency.py --trace: as qpy/trace.py


def trace(label: str) -> None:
    """One timestamp line for the latency bench's trace (nothing unless QPY_TRACE)."""
    if TRACE:
        fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{time.monotonic_ns()} {os.getpid()} {label}\n".encode())
        os.close(fd)
SH = "/bin/sh"
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded once: a dlopen in each forked child costs


def checked_op(op: dict) -> dict:
    """An op that fits ``OPS``; ValueError naming what is wrong otherwise."""
    missing = [f for f in OPS.get(op.get("op"), ()) if f not in op]
    if op.get("op") not in OPS or missing:
        raise ValueError(f"op {op.get('op')!r} is unknown or lacks {missing}")
    return op


def emit(event: dict) -> None:
    """One event line to the master."""
    data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def proc_start(pid: int) -> int | None:
    """Start time of a process in clock ticks: tells a live supervisor from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
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
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(x) for x in f.read().split())
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


def scan_slots(slots: int) -> tuple[dict[int, int], list[int]]:
    """The slot of each job in the slots file, and the free slots (lowest last)."""
    size = os.fstat(slots).st_size // SLOT
    data = os.pread(slots, size * SLOT, 0)
    slot_of, free = {}, []
    for i in range(size):
        head, _ = parse_slot(data[i * SLOT:(i + 1) * SLOT])
        if head is None:
            free.append(i)
        else:
            slot_of[head[0]] = i
    free.reverse()
    return slot_of, free


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


class Supervisor:
    """Runs in a forked child: prepared while idle, then owns one job to its recorded end."""

    def __init__(self, slots: int, notify: int, inbox: int) -> None:
        self.slots = slots
        self.notify = notify
        self.inbox = inbox
        self.op: dict = {}
        self.offset = 0
        self.grace = 10.0
        self.job_pid = 0
        self.killing = False
        self.devnull = -1

    def prepare(self) -> None:
        """Everything that does not depend on the job, done before the job is known."""
        os.setsid()
        self._set_subreaper()
        keep = sorted((self.notify, self.slots, self.inbox))
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
        # SIGTERM (a kill) stays blocked, as forked: one that comes before the job exists
        # waits, and is handled once the job's process group can be signalled

    def serve(self) -> None:
        """Wait for the job (EOF: the launcher is gone, nothing to do), run it, exit."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self.inbox, 1 << 20)
            if not chunk:
                os._exit(0)
            data += chunk
        os.close(self.inbox)
        trace("supervisor: start op")
        self.op = json.loads(data)
        self.offset = int(self.op["slot"]) * SLOT
        self.grace = float(self.op.get("grace", 10.0))
        self.run()

    def run(self) -> None:
        """Never returns: the supervisor exits with os._exit."""
        me = os.getpid()
        os.pwrite(self.slots, padded(f"{self.op['job']} {me} {proc_start(me)} {self.op['t']}",
                                     HALF), self.offset)
        try:
            out, err = self._open_outputs()
            trace("supervisor: outputs open")
        except StartError as exc:
            self._record({"error": exc.why, "in": exc.where})
            self._tell_launcher()
            os._exit(0)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGALRM, self._on_alarm)
        self.job_pid = self._spawn_job(self.devnull, out, err)
        trace("supervisor: job spawned")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a waiting kill now
        os.close(out)
        os.close(err)
        status = self._wait_job()
        trace("supervisor: job reaped")
        code = os.waitstatus_to_exitcode(status)
        self._record({"exit": code} if code >= 0 else {"signal": -code})
        if self.killing:  # what is left gets the rest of its grace, and holds the cores
            self._clean_up()
            self._tell_launcher()
        else:
            self._tell_launcher()
            trace("supervisor: launcher told")
            self._clean_up()
        os._exit(0)

    def _set_subreaper(self) -> None:
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def _open_outputs(self) -> tuple[int, int]:
        try:
            os.chdir(self.op["cwd"])
        except OSError as exc:
            raise StartError("cwd", exc.strerror) from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        opened = []
        for which in ("out", "err"):
            try:
                opened.append(os.open(self.op[which], flags, 0o644))
            except OSError as exc:
                raise StartError(which, exc.strerror) from None
        return opened[0], opened[1]

    def _spawn_job(self, stdin: int, out: int, err: int) -> int:
        """Start the job as a session leader with default signal handling.

        posix_spawn (vfork-like) runs no Python in the child, so a job starts in a fraction
        of what a second fork of this interpreter would cost.
        """
        try:
            return os.posix_spawn(
                SH, ["sh", "-c", self.op["cmd"]], self.op["env"], setsid=True,
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                              (os.POSIX_SPAWN_DUP2, err, 2)],
                setsigmask=(),
                setsigdef=(signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP,
                           signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            self._record({"error": f"cannot start {SH}: {exc.strerror}"})
            os._exit(0)

    def _wait_job(self) -> int:
        """Reap everything (orphans come to us) until the job's main process ends."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            if pid == self.job_pid:
                return status

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

    def _on_alarm(self, *_: object) -> None:
        self._signal_tree(signal.SIGKILL)

    def _tell_launcher(self) -> None:
        """Report the end at once, before cleaning up and exiting (the pidfd would only
        fire after that); a launcher that is gone simply misses it and uses the pidfd."""
        try:
            os.write(self.notify, f"{self.op['job']}\n".encode())
        except OSError:
            pass

    def _record(self, result: dict) -> None:
        """Write the exit record in one pwrite into the second half of the slot."""
        result["t_end"] = time.time()
        if "error" in result:
            result["error"] = result["error"][:80]
        os.pwrite(self.slots, padded(json.dumps(result), HALF), self.offset + HALF)

    def _clean_up(self) -> None:
        """The job is over: whatever it left running goes too, so its cores are really free.

        During a kill, the leftovers first get the rest of the grace period (the armed timer
        escalates to SIGKILL); otherwise they are killed at once.
        """
        while self.killing and descendants(os.getpid()):
            try:
                os.waitpid(-1, 0)
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
                    os.waitpid(-1, 0)
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
        if self.fd >= 0:
            sel.register(self.fd, selectors.EVENT_READ, "sessions")

    def path(self, job: int) -> str:
        return os.path.join(self.run_dir, f"s{job}")

    def started(self, op: dict) -> None:
        """A start op: an interactive job gets its directory, fresh, and is watched."""
        if op.get("session"):
            path = self.path(int(op["job"]))
            os.makedirs(path, mode=0o700, exist_ok=True)
            for name in ("state", "status"):
                try:
                    os.unlink(os.path.join(path, name))
                except FileNotFoundError:
                    pass
            self.watch(int(op["job"]))

    def watch(self, job: int) -> None:
        """Watch the job's session directory if it has one, and report its state now."""
        if self.fd < 0 or not os.path.isdir(self.path(job)) or job in self.jobs.values():
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

    def remove(self, job: int) -> None:
        """The job's slot is free: stop watching, and remove its session directory."""
        for wd in [wd for wd, j in self.jobs.items() if j == job]:
            LIBC.inotify_rm_watch(self.fd, wd)
            del self.jobs[wd]
        if os.path.isdir(self.path(job)):
            import shutil

            shutil.rmtree(self.path(job), ignore_errors=True)


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
        path = os.path.join(run_dir, "slots")
        self.slots = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []
        self.forgotten: set[int] = set()
        self.envs: dict[int, dict[str, str]] = {}
        self.deferred: dict[int, dict] = {}  # job -> its start, waiting for its old run
        self.spare: tuple[int, int] | None = None
        self.sessions = SessionWatch(run_dir, self.sel)
        self._scan()

    def _scan(self) -> None:
        """Learn which slots hold jobs not yet forgotten (started by earlier launchers)."""
        self.slot_of, self.free = scan_slots(self.slots)

    def _take_slot(self) -> int:
        if self.free:
            return self.free.pop()
        slot = os.fstat(self.slots).st_size // SLOT
        os.pwrite(self.slots, BLANK, slot * SLOT)
        return slot

    def _slot(self, job: int) -> tuple[tuple[int, int, int, float] | None, dict | None]:
        slot = self.slot_of.get(job)
        if slot is None:
            return None, None
        head, result = parse_slot(os.pread(self.slots, SLOT, slot * SLOT))
        return (head, result) if head is not None and head[0] == job else (None, None)

    def serve(self) -> None:
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)
        self.sel.register(self.notify_r, selectors.EVENT_READ, "notify")
        emit({"ev": "ready", "pid": os.getpid()})
        self.spare = self._fork_supervisor()
        while True:
            for key, _ in self.sel.select():
                if key.data is None:
                    if not self._read_ops():
                        return
                elif key.data == "notify":
                    self._notified()
                elif key.data == "sessions":
                    self.sessions.read()
                else:
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
                       "forget": self.forget, "env": self.env, "sweep": self.sweep}[op["op"]]
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
        if job in self.watched:  # a requeued job whose old run is still ending: it goes first
            self.deferred[job] = op
            self.kill({"job": job})
            return
        op["env"] = {**self.envs.get(op.get("env_id"), {}), **op.get("vars", {})}
        op["t"] = t_start = time.time()
        op["slot"] = slot = self._take_slot()
        self.slot_of[job] = slot
        self.sessions.started(op)
        pid, inbox = self.spare or self._fork_supervisor()
        self.spare = None
        data = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[os.write(inbox, data):]
        os.close(inbox)
        self._watch(job, pid, own=True)
        emit({"ev": "started", "job": job, "pid": pid, "t": t_start})
        self.spare = self._fork_supervisor()

    def _fork_supervisor(self) -> tuple[int, int]:
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
                supervisor = Supervisor(self.slots, self.notify_w, inbox_r)
                supervisor.prepare()
                supervisor.serve()
            finally:
                os._exit(1)
        os.close(inbox_r)
        return pid, inbox_w

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
        if job not in self.slot_of:
            self._scan()  # a supervisor forked just before the old launcher died
        head, result = self._slot(job)
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
        self._report_end(job)

    def sweep(self, op: dict) -> None:
        """Sent first to every new launcher: kill and free what this node still holds of
        jobs the master no longer runs (the node was declared down while they ran, or the
        master recorded their end but died before freeing the slot)."""
        keep = {int(j) for j in op["keep"]}
        self._scan()
        for job in [j for j in self.slot_of if j not in keep and j not in self.watched]:
            head, result = self._slot(job)
            if head is not None and result is None and proc_start(head[1]) == head[2] \
                    and self._watch(job, head[1], own=False):
                self.reported.add(job)  # nobody wants to hear of its end
                self.forgotten.add(job)
                self.kill({"job": job})
            else:
                self._free_slot(job)

    def kill(self, op: dict) -> None:
        entry = self.watched.get(int(op["job"]))
        if entry is not None:
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
        slot = self.slot_of.pop(job, None)
        if slot is not None:
            os.pwrite(self.slots, BLANK, slot * SLOT)
            self.free.append(slot)

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
            if job in self.watched and job not in self.reported and job not in self.deferred:
                self.reported.add(job)
                self._report_end(job)
                trace("launcher: end sent")

    def _ended(self, job: int) -> None:
        _, pid, own = self._unwatch(job)
        if own:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if job in self.deferred:  # the old run is over: nobody waits for its end
            self.reported.discard(job)
            self.forgotten.discard(job)
            self._free_slot(job)
            self.start(self.deferred.pop(job))
            return
        if job in self.reported:
            self.reported.discard(job)
        else:
            self._report_end(job)
        if job in self.forgotten:
            self.forgotten.discard(job)
            self._free_slot(job)

    def _report_end(self, job: int) -> None:
        _, result = self._slot(job)
        if result is None:
            emit({"ev": "lost", "job": job, "ran": True,
                  "reason": "its supervisor ended without recording an exit status"})
        else:
            emit({"ev": "ended", "job": job, **result})


def main() -> None:
    run_dir = sys.argv[1]
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Launcher(run_dir).serve()


if __name__ == "__main__":
    main()
