"""The node side of an interactive job (``qpy connect``). Standard library only.

An interactive job is a normal job whose command is this program, sent inline in the
job's command (the node needs python3 and nothing of qpy), so its process tree is what
the supervisor watches, kills and accounts for. It runs in the job's directory with the
job's environment and takes its arguments after ``--``: the session directory (private,
made by the launcher under ``~/.qpy/run/NODE``), the kind (``tmux`` or ``gui``), the job's
ID, the node's name and, for ``gui``, the program to run and its arguments.

* ``tmux``: a tmux server on a private socket with one session whose shell is the user's
  login shell from the password database, started as a login shell. The user's own tmux
  configuration is read first; then qpy's settings: each window's shell writes its exit
  status to a file when it ends, the session ends with its last window, the server with
  the session, and this program with the server, exiting with the last shell's status.
  When xpra and Xvfb are installed, an xpra server runs beside it on a display of its own
  and ``DISPLAY`` is set in the session.
* ``gui``: an xpra server on a display of its own runs the program, and ends with it; this
  program exits with the program's status.

Displays are derived from the user and the job (no clash between jobs or users), the next
free one if that is taken. xpra runs in the foreground (no daemon, no systemd scope), so it
is part of the job's tree: the supervisor ends it with the job, always.

While the session runs this program samples, every second, the last input through tmux
(or an attach) and the CPU time of the session's processes; the session is *idle* since
the later of the two moments at which either happened (CPU counts from 5% of one core).
It writes what the master must know to ``state`` in the session directory (atomically,
only when it changes): ready, socket, display, attached clients, idle since, or an error.
The launcher watches that directory and passes each new state on to the master.
"""

from __future__ import annotations

import os
import pwd
import select
import sys
import time

SESSION = "qpy"  # the tmux session's name
SAMPLE = 1.0  # seconds between idle samples
BUSY = 0.05  # share of one core above which the session is not idle
SOCKET_ROOM = 100  # a unix socket path must stay below 108 bytes
DISPLAYS = (200, 30000)  # the range displays are derived in
XPRA_OPTIONS = ("--daemon=no", "--systemd-run=no", "--mdns=no", "--pulseaudio=no",
                "--speaker=off", "--microphone=off", "--webcam=no", "--notifications=no",
                "--printing=no", "--dbus-launch=", "--dbus-proxy=no", "--dbus-control=no",
                "--html=off", "--file-transfer=no", "--tray=no", "--system-tray=no",
                "--bell=no", "--start-via-proxy=no", "--start=")
MISSING = 127  # the exit status when what a session needs is not installed
BACKGROUND = 10  # the niceness of a tmux session's xpra: the shell comes first


class SessionError(Exception):
    """The session cannot start; the text names what is missing."""


# Until the session is there, only built-in modules are imported: this program's start is
# on the way from ``qpy connect`` to the prompt (json, subprocess, shutil, shlex and hashlib
# would double it). So JSON, quoting and looking up programs are done here.


def quote(text: str) -> str:
    """``text`` as one word for sh."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def to_json(value: object) -> str:
    """JSON of the state (strings, numbers, booleans and None in a flat object)."""
    import _json

    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)  # int, float


def which(program: str) -> str | None:
    """The program on the job's PATH, as the shell would find it."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` to its end: (exit status, its output and errors)."""
    read, write = os.pipe()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, write, 1), (os.POSIX_SPAWN_DUP2, write, 2)])
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def socket_path(directory: str) -> str:
    """The tmux socket: in the session directory when the path fits a unix socket, else
    in a private directory of this user under /tmp named after it."""
    path = os.path.join(directory, "tmux")
    if len(path.encode()) <= SOCKET_ROOM:
        return path
    import hashlib

    digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:16]
    return os.path.join(private_dir(f"/tmp/qpy-{os.getuid()}"), f"{digest}.tmux")


def private_dir(path: str) -> str:
    """``path`` as a directory only this user can use, or SessionError."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(path):
        raise SessionError(f"{path} is not a private directory of this user")
    return path


def first_display(job: int) -> int:
    """The display a job tries first: derived from the user and the job."""
    low, high = DISPLAYS
    return low + (os.getuid() * 7919 + job) % (high - low)


def display_taken(display: int) -> bool:
    """Whether an X server holds ``display``: its lock file names a live process (X
    servers take over a stale lock themselves)."""
    try:
        with open(f"/tmp/.X{display}-lock") as f:
            os.kill(int(f.read().strip() or 0), 0)
    except (FileNotFoundError, ProcessLookupError):
        return False
    except (OSError, ValueError):  # unreadable, or another user's live server
        return True
    return True


def free_display(start: int) -> int:
    """``start`` or the next display no X server holds on this node."""
    low, high = DISPLAYS
    display = start
    for _ in range(high - low):
        if not display_taken(display):
            return display
        display = low + (display + 1 - low) % (high - low)
    raise SessionError("no free X display on this node")


def tq(text: str) -> str:
    """``text`` as one double-quoted word of a tmux configuration file."""
    return '"' + "".join("\\" + c if c in '"\\$' else c for c in text) + '"'


def tmux_conf(directory: str, shell: str) -> str:
    """The configuration the server starts with: the user's own, then what qpy needs.

    Every window runs the login shell through ``sh``, which writes the shell's exit status
    to ``status`` when it ends: the last one written is the session's. (tmux's own
    ``pane-died`` hook with ``remain-on-exit`` loses the status now and then: tmux 3.3 may
    see the pane's terminal close before it has reaped the shell.)"""
    status = quote(os.path.join(directory, "status"))
    command = f"SHELL={quote(shell)} {quote(shell)} -l; echo $? > {status}"
    lines = [f"source-file -q {tq(path)}" for path in (
        "/etc/tmux.conf", "~/.tmux.conf", "~/.config/tmux/tmux.conf")]
    lines += [
        "set -g default-shell /bin/sh", f"set -g default-command {tq(command)}",
        "set -s exit-empty on", "set -s exit-unattached off",
        "set -g destroy-unattached off", "set -g remain-on-exit off",
    ]
    path = os.path.join(directory, "tmux.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def read_status(directory: str) -> int | None:
    """The exit status of the session's last shell, from ``status`` (as sh wrote it:
    128 + N for a shell ended by signal N), or None."""
    try:
        with open(os.path.join(directory, "status")) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def tree_ticks(pid: int) -> int:
    """CPU ticks of ``pid`` and all its descendants, including their reaped children."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return total


class Session:
    """One session's processes, its state file and its idle samples."""

    def __init__(self, args: list[str]) -> None:
        self.dir, self.kind, job, self.node, *self.program = args
        self.job = int(job)
        self.state: dict = {"ready": False, "dir": self.dir, "socket": None, "display": None,
                            "xpra": None, "since": time.time(), "attached": 0, "error": None}
        self.xpra = None  # subprocess.Popen
        self.hz = os.sysconf("SC_CLK_TCK")

    # -- the state file ----------------------------------------------------------------------

    def write(self, **changes: object) -> None:
        """Change the state and write it (atomically: the launcher reads it on rename)."""
        self.state.update(changes)
        tmp = os.path.join(self.dir, "state.tmp")
        with open(tmp, "w") as f:
            f.write(to_json({**self.state, "t": time.time()}))
        os.replace(tmp, os.path.join(self.dir, "state"))

    def fail(self, text: str) -> None:
        """The session cannot run: say why (state and the job's stderr) and exit."""
        sys.stderr.write(f"qpy connect: {text}\n")
        try:
            self.write(error=text)
        except OSError:
            pass
        sys.exit(MISSING)

    # -- xpra --------------------------------------------------------------------------------

    def need(self, program: str) -> str:
        found = which(program)
        if found is None:
            raise SessionError(f"{program} is not installed on {self.node}")
        return found

    def start_xpra(self, child: list[str] | None, out: int | None,
                   display: int | None = None) -> int:
        """An xpra server in the foreground on a display derived from the job; the one of
        a tmux session (no ``child``) runs at a lower priority, beside the shell."""
        import subprocess

        xpra = self.need("xpra")
        self.need("Xvfb")
        display = free_display(first_display(self.job)) if display is None else display
        argv = [xpra, "start", f":{display}", *XPRA_OPTIONS, f"--socket-dir={self.dir}",
                f"--log-dir={self.dir}"]
        if child is not None:
            argv += [f"--start-child={' '.join(child)}", "--exit-with-children=yes"]
        env = {**os.environ, "XPRA_SOCKET_DIR": self.dir}
        env.pop("DISPLAY", None)
        self.xpra = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=None if child else lambda: os.nice(BACKGROUND))
        return display

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        private_dir(self.dir)
        try:
            code = self.run_gui() if self.kind == "gui" else self.run_tmux()
        except SessionError as exc:
            self.fail(str(exc))
        self.stop_xpra()
        sys.exit(1 if code is None else code)

    def stop_xpra(self) -> None:
        if self.xpra is not None and self.xpra.poll() is None:
            import subprocess

            self.xpra.terminate()
            try:
                self.xpra.wait(5)
            except subprocess.TimeoutExpired:
                self.xpra.kill()

    def run_tmux(self) -> int | None:
        tmux = self.need("tmux")
        shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        display = None
        if which("xpra") and which("Xvfb"):
            display = free_display(first_display(self.job))
            env["DISPLAY"] = f":{display}"
        sock = socket_path(self.dir)
        code, out = run([tmux, "-S", sock, "-f", tmux_conf(self.dir, shell), "new-session",
                         "-d", "-s", SESSION, "-P", "-F", "#{pid}"], env)
        if code != 0 or not out.strip().isdigit():
            raise SessionError(f"tmux did not start: {out.strip()[:200]}")
        server = int(out)
        self.write(ready=True, socket=sock, display=display,
                   xpra="ok" if display else "missing")
        if display is not None:  # started once the session is there: not on its way
            log = os.open(os.path.join(self.dir, "xpra.out"), os.O_WRONLY | os.O_CREAT, 0o600)
            self.start_xpra(None, log, display)
            os.close(log)
        self.watch(server, lambda: self.tmux_sample(tmux, sock))
        return read_status(self.dir)

    def run_gui(self) -> int | None:
        import subprocess

        if not self.program:
            raise SessionError("no program to run under xpra")
        status = quote(os.path.join(self.dir, "status"))
        program = " ".join(quote(word) for word in self.program)
        child = ["sh", "-c", quote(f"{program}; echo $? > {status}")]
        display = self.start_xpra(child, subprocess.PIPE)
        for line in self.xpra.stdout:
            os.write(2, line)
            if b"xpra is ready" in line:
                self.write(ready=True, display=display, xpra="ok")
                break
        else:
            self.xpra.wait()
            raise SessionError(f"xpra did not start on {self.node} (see the job's .err)")
        self.watch(self.xpra.pid, None, self.xpra.stdout)
        self.xpra.wait()
        return read_status(self.dir)

    def watch(self, pid: int, sample, output=None) -> None:
        """Until ``pid`` ends: every second, sample the idle time (the tree's CPU and, with
        ``sample``, the last input and the attached clients); pass ``output`` on to the
        job's stderr as it comes."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        ticks, at = tree_ticks(pid), time.monotonic()
        watched = [pidfd] + ([output.fileno()] if output is not None else [])
        while True:
            wait = max(0.0, at + SAMPLE - time.monotonic())
            ready, _, _ = select.select(watched, [], [], wait)
            if pidfd in ready:
                os.close(pidfd)
                return
            if ready:  # the output
                data = os.read(output.fileno(), 65536)
                if data:
                    os.write(2, data)
                else:
                    watched.remove(output.fileno())
                continue
            used, now = tree_ticks(pid), time.monotonic()
            busy = (used - ticks) / self.hz / max(now - at, 1e-3) >= BUSY
            ticks, at = used, now
            activity, attached = sample() if sample is not None else (0.0, 0)
            since = time.time() if busy else self.state["since"]
            since = max(since, activity)
            if since != self.state["since"] or attached != self.state["attached"]:
                self.write(since=since, attached=attached)

    def tmux_sample(self, tmux: str, sock: str) -> tuple[float, int]:
        """(last input or attach, attached clients) over the server's sessions."""
        _, out = run([tmux, "-S", sock, "list-sessions", "-F",
                      "#{session_activity} #{session_last_attached} #{session_attached}"],
                     dict(os.environ))
        activity, attached = 0.0, 0
        for line in out.splitlines():
            words = [int(w) if w.isdigit() else 0 for w in line.split()]
            if len(words) == 3:
                activity = max(activity, float(words[0]), float(words[1]))
                attached += words[2]
        return activity, attached


def main() -> None:
    import _signal  # signal itself imports enum

    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    Session(sys.argv[sys.argv.index("--") + 1:]).run()


if __name__ == "__main__":
    main()
