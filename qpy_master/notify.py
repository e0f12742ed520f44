"""What the master runs when a job ends: the user's ``notify`` command (``qpy config
notify COMMAND``) and the mails asked for with ``qpy sub --mail end,fail``; and the
notify command again when an interactive session passes the admin's ``idle_warn``.

Each is a child process of the master, run once per end of a job (``QPY_EVENT=end``)
or per idle warning (``QPY_EVENT=idle_warn``), never on the job's path:
``Records.on_end`` (under the master's lock, inside the transaction that records the
end) and ``Sessions.warn`` only queue it and wake this module's thread, which takes the
queue under the lock (so an end that was rolled back is never announced), starts the
children, reaps them through pidfds, and logs those that fail with the end of their
stderr.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qpy.model import Job
from qpy.render import idle_text
from qpy.words import ended_by
from qpy_master.gates import failure

log = logging.getLogger("qpy.master.notify")
SENDMAIL_DIRS = ("/usr/sbin", "/usr/lib", "/sbin", "/usr/bin")
STDERR_KEPT = 2000  # bytes of a failing child's stderr that go into the log


def sendmail() -> str | None:
    """The local ``sendmail``, on the PATH or where MTAs put it; None if there is none."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SENDMAIL_DIRS])
    return shutil.which("sendmail", path=path)


def no_mail_warning(job_id: int) -> str | None:
    """What ``qpy sub --mail`` says when this host cannot send mail."""
    if sendmail() is not None:
        return None
    return (f"job {job_id} will send no mail: this host has no sendmail (looked on the "
            f"PATH and in {', '.join(SENDMAIL_DIRS)}); ask your administrator for one")


def environment(job: Job, event: str = "end") -> dict[str, str]:
    """The job as the notify command reads it: its end, or (``idle_warn``) a running
    session's state, whose exit code and signal are empty."""
    return {"QPY_EVENT": event, "QPY_JOB_ID": str(job.id), "QPY_STATUS": job.status,
            "QPY_EXIT": "" if job.exit_code is None else str(job.exit_code),
            "QPY_SIGNAL": "" if job.signal is None else str(job.signal),
            "QPY_NODE": job.node or ""}


def mail(job: Job, user: str) -> bytes:
    """The mail of a job's end, for ``sendmail -t``."""
    how = ended_by(job.exit_code, job.signal)
    lines = [f"To: {user}", f"Subject: qpy job {job.id} {job.status} ({how})", "",
             f"Job {job.id} ended {job.status}, {how}.", f"Command:   {job.command}",
             f"Directory: {job.cwd}", f"Node:      {job.node or '-'}",
             f"Started:   {_stamp(job.t_start)}", f"Ended:     {_stamp(job.t_end)}"]
    if job.reason:
        lines.append(f"Reason:    {job.reason}")
    return ("\n".join(lines) + "\n").encode(errors="replace")


def _stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


@dataclass
class Child:
    what: str
    proc: subprocess.Popen
    pidfd: int
    err: bytearray


class Notifier:
    """The queue of ends to announce, and the thread that runs and reaps the children."""

    def __init__(self, lock: threading.RLock, user: str, settings: Callable[[], dict],
                 on_rollback: Callable[[Callable[[], None]], None]) -> None:
        self.lock, self.user, self.settings = lock, user, settings
        self.on_rollback = on_rollback
        self.starting = threading.Lock()  # held while a batch is taken and started
        self.pending: list[tuple[str, list[str], dict[str, str], str, bytes | None]] = []
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._run, name="notify", daemon=True).start()

    def ended(self, job: Job) -> None:
        """``Records.on_end``: queue what this end asks for (nothing runs here)."""
        items = self._notify(job, f"notify command for job {job.id}", environment(job))
        if job.mail and ("end" in job.mail.split(",") or failure(job) is not None):
            program = sendmail()
            if program is None:
                log.warning("job %d: no mail sent: this host has no sendmail", job.id)
            else:
                items.append((f"mail for job {job.id}", [program, "-oi", "-t"],
                              dict(os.environ), "/", mail(job, self.user)))
        self._queue(items)

    def idle_warned(self, job: Job, idle: float) -> None:
        """A session passed the admin's idle_warn (``Sessions.warn``, once per idle
        spell): the notify command hears of it, with the idle time in ``QPY_IDLE``."""
        env = {**environment(job, "idle_warn"), "QPY_IDLE": idle_text(idle)}
        self._queue(self._notify(job, f"notify command for the idle warning of job "
                                      f"{job.id}", env))

    def _notify(self, job: Job, what: str, variables: dict[str, str]) -> list[tuple]:
        """The notify command with ``variables``, if the user set one."""
        command = self.settings().get("notify")
        if not command:
            return []
        return [(what, ["/bin/sh", "-c", command], {**os.environ, **variables}, job.cwd,
                 None)]

    def _queue(self, items: list[tuple]) -> None:
        """Start ``items`` from the thread, once the transaction that asks for them (if
        any) is over; a rollback takes them back."""
        if items:
            self.pending += items
            self.on_rollback(lambda: [self.pending.remove(i) for i in items
                                      if i in self.pending])
            os.write(self.wake_w, b"!")

    def _run(self) -> None:
        while True:
            for key, _ in self.sel.select():
                try:
                    self._event(key)
                except Exception:  # the thread must live on: later ends are announced too
                    log.exception("notifications: an event failed")

    def _event(self, key: selectors.SelectorKey) -> None:
        if key.data is None:
            self._start_pending()
        elif key.fd == key.data.pidfd:
            self._reap(key.data)
        else:
            self._read_err(key.data)

    def close(self) -> None:
        """The master stops: start what is still queued now (the children outlive it;
        nobody reaps them but init, and their failures go unlogged)."""
        self._start_pending()

    def _start_pending(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self.starting:
            with self.lock:  # the transaction that queued them is over: committed or not
                items, self.pending = self.pending, []
            for what, argv, env, cwd, data in items:
                self._start(what, argv, env, cwd, data)

    def _start(self, what: str, argv: list[str], env: dict[str, str], cwd: str,
               data: bytes | None) -> None:
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd if os.path.isdir(cwd) else "/",
                                    stdin=subprocess.PIPE if data else subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True, close_fds=True)
            if data:
                try:
                    proc.stdin.write(data)  # a few KB: fits the pipe, never blocks
                except OSError:
                    pass
                proc.stdin.close()
            child = Child(what, proc, os.pidfd_open(proc.pid), bytearray())
        except OSError as exc:
            log.warning("%s could not start: %s", what, exc)
            return
        os.set_blocking(proc.stderr.fileno(), False)
        self.sel.register(child.pidfd, selectors.EVENT_READ, child)
        self.sel.register(proc.stderr.fileno(), selectors.EVENT_READ, child)

    def _read_err(self, child: Child) -> bool:
        """Keep the end of what the child wrote to stderr so far; False once there is
        nothing more to read now (closed, or nothing written yet)."""
        if child.proc.stderr.closed:
            return False  # reaped (and closed) earlier in the same round of events
        try:
            chunk = os.read(child.proc.stderr.fileno(), 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._close_err(child)
            return False
        child.err += chunk
        del child.err[:-STDERR_KEPT]
        return True

    def _close_err(self, child: Child) -> None:
        if not child.proc.stderr.closed:
            self.sel.unregister(child.proc.stderr.fileno())
            child.proc.stderr.close()

    def _reap(self, child: Child) -> None:
        """The child ended: reap it, and log it with its stderr if it failed (what a
        grandchild may still write is not waited for)."""
        self.sel.unregister(child.pidfd)
        os.close(child.pidfd)
        code = child.proc.wait()
        while not child.proc.stderr.closed and self._read_err(child):
            pass
        self._close_err(child)
        if code != 0:
            text = " ".join(child.err.decode(errors="replace").split())[-300:]
            log.warning("%s failed (exit status %d)%s", child.what, code,
                        f": {text}" if text else "")
