"""The job launcher: starts, watches and kills jobs on one node. Standard library only.

The master runs one launcher per node (``python3 -S launcher.py RUN_DIR``: locally as a
child, remotely over ssh) and talks to it in JSON lines on stdin/stdout. For each job the
launcher forks a *supervisor* that:

* leaves the launcher's session, so the job outlives the launcher and the master;
* becomes a child subreaper, so every descendant of the job, even one that called
  ``setsid``, stays below it and can be found and killed;
* forks the job as a session leader running ``/bin/sh -c COMMAND`` in its directory;
* writes ``RUN_DIR/<job>.exit`` with the exact wait status once the job's main process
  ends, then kills what the job left behind.

The launcher learns of a supervisor's end through a pidfd, which works for supervisors a
previous launcher started too: that is how a restarted master re-adopts running jobs with
no polling. Killing sends SIGTERM to the supervisor, which passes it to the whole tree and
escalates to SIGKILL after the job's grace period.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
SH = "/bin/sh"


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


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Supervisor:
    """Runs in the forked child: owns one job from start to recorded end."""

    def __init__(self, op: dict, run_dir: str, notify: int) -> None:
        self.op = op
        self.notify = notify
        self.base = os.path.join(run_dir, str(op["job"]))
        self.grace = float(op.get("grace", 10.0))
        self.job_pid = 0
        self.killing = False

    def run(self) -> None:
        """Never returns: the supervisor exits with os._exit."""
        os.setsid()
        self._set_subreaper()
        os.closerange(3, self.notify)
        os.closerange(self.notify + 1, 1 << 16)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        me = os.getpid()
        write_atomic(self.base + ".pid", f"{me} {proc_start(me)} {self.op['t']}\n")
        try:
            out, err = self._open_outputs()
        except OSError as exc:
            self._record({"error": f"{exc.strerror}: {exc.filename}"})
            os._exit(0)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGALRM, self._on_alarm)
        self.job_pid = self._spawn_job(devnull, out, err)
        os.close(out)
        os.close(err)
        status = self._wait_job()
        code = os.waitstatus_to_exitcode(status)
        self._record({"exit": code} if code >= 0 else {"signal": -code})
        if self.killing:  # what is left gets the rest of its grace, and holds the cores
            self._clean_up()
            self._tell_launcher()
        else:
            self._tell_launcher()
            self._clean_up()
        os._exit(0)

    def _set_subreaper(self) -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except OSError:
            pass

    def _open_outputs(self) -> tuple[int, int]:
        os.chdir(self.op["cwd"])
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return os.open(self.op["out"], flags, 0o644), os.open(self.op["err"], flags, 0o644)

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
        result["t_end"] = time.time()
        write_atomic(self.base + ".exit", json.dumps(result))

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

    def path(self, job: int, suffix: str) -> str:
        return os.path.join(self.run_dir, f"{job}.{suffix}")

    def serve(self) -> None:
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)
        self.sel.register(self.notify_r, selectors.EVENT_READ, "notify")
        emit({"ev": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self.sel.select():
                if key.data is None:
                    if not self._read_ops():
                        return
                elif key.data == "notify":
                    self._notified()
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
            op = json.loads(line)
            handler = {"start": self.start, "kill": self.kill, "adopt": self.adopt,
                       "forget": self.forget}[op["op"]]
            handler(op)
        except Exception as exc:  # one bad op must not end the launcher
            emit({"ev": "error", "text": f"{type(exc).__name__}: {exc}", "op": line[:200].decode(
                errors="replace")})

    def start(self, op: dict) -> None:
        job = int(op["job"])
        op["t"] = t_start = time.time()
        pid = os.fork()
        if pid == 0:
            try:
                Supervisor(op, self.run_dir, self.notify_w).run()
            finally:
                os._exit(1)
        self._watch(job, pid, own=True)
        emit({"ev": "started", "job": job, "pid": pid, "start": proc_start(pid), "t": t_start})

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
        pid, start = op.get("pid"), op.get("start")
        if pid is None:
            pid, start, t = self._pid_file(job)
            if pid is not None:  # the master crashed before it learnt the PID
                emit({"ev": "started", "job": job, "pid": pid, "start": start, "t": t})
        if pid is not None and proc_start(pid) == start and self._watch(job, pid, own=False):
            if proc_start(pid) == start:  # still the same process now that the pidfd holds it
                return
            self._unwatch(job)
        if pid is None and read_json(self.path(job, "exit")) is None:
            emit({"ev": "lost", "job": job, "ran": False, "reason": "the job was never started"})
            return
        self._report_end(job)

    def _pid_file(self, job: int) -> tuple[int | None, int | None, float | None]:
        try:
            with open(self.path(job, "pid")) as f:
                pid, start, t = f.read().split()[:3]
            return int(pid), int(start), float(t)
        except (OSError, ValueError):
            return None, None, None

    def kill(self, op: dict) -> None:
        entry = self.watched.get(int(op["job"]))
        if entry is not None:
            try:
                signal.pidfd_send_signal(entry[0], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def forget(self, op: dict) -> None:
        """The master has recorded the end: the run files can go."""
        for suffix in ("pid", "exit"):
            try:
                os.unlink(self.path(int(op["job"]), suffix))
            except FileNotFoundError:
                pass

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
        for word in data.split():
            job = int(word)
            if job in self.watched and job not in self.reported:
                self.reported.add(job)
                self._report_end(job)

    def _ended(self, job: int) -> None:
        _, pid, own = self._unwatch(job)
        if own:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if job in self.reported:
            self.reported.discard(job)
        else:
            self._report_end(job)

    def _report_end(self, job: int) -> None:
        result = read_json(self.path(job, "exit"))
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
