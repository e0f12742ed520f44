"""qpy connect's time-to-prompt on an idle node, beside ssh and tmux in the same run.

* time-to-prompt: from starting ``qpy connect --new`` on a terminal (a pseudo-terminal
  this script reads) to the session's shell prompt on that terminal: the session is
  queued, granted, started on the node (its tmux server and login shell), and attached;
* baselines: ``tmux new-session -d`` on a fresh server (what starting a session costs at
  the least), and with ``--nodes``, ``ssh node1 true`` over the user's open multiplexed
  connection (what reaching the node costs at the least).

It runs as a user made for the run (``qpytest_node_TAG`` of tests/netns_nodes.py, whose
login shell is bash with Debian's default profile) with qpy in a venv every account can
run (tests/multiuser.py), on the embedded default: this machine, or with ``--nodes N``
node1 of N network-namespace nodes over ssh. All three are started the same way, as the
user through ``runuser``, whose own cost is in each figure. Needs root; everything is
removed after.

``--trace``: where time-to-prompt goes. Every process on the way writes a timestamp per
hop (``QPY_TRACE``, ``qpy/trace.py``; the user's bash too, from its start-up files and
just before its first prompt); the line printed gives the median of each hop, from
starting ``qpy connect`` to the prompt on the terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time

from common import ROOT, hops, mark, nodes_option

sys.path.insert(0, str(ROOT / "tests"))
import multiuser  # noqa: E402
import netns_nodes  # noqa: E402

RUNS = 15
WAIT = 60.0
TRACE = "--trace" in sys.argv
# bash's marks (wall clock in microseconds, turned into the monotonic clock when read)
BASH_MARK = 'printf "R%s %s bash: {}\\n" "${{EPOCHREALTIME/./}}" $$ >> "$QPY_TRACE"\n'


class World:
    """The user, their qpy home and the venv; commands run as the user."""

    def __init__(self, nodes: int) -> None:
        self.cluster = netns_nodes.Cluster(max(nodes, 1))
        self.cluster.start()
        self.user = self.cluster.user
        self.home = self.cluster.home()
        self.venv = multiuser.build_venv()
        self.qpy_home = self.home / ".qpy"
        self.nodes = nodes
        if nodes:
            admin = self.qpy_home / "embedded"
            admin.mkdir(parents=True, mode=0o700)
            cores = len(os.sched_getaffinity(0))
            (admin / "nodes").write_text("".join(f"{name} cores={cores} memory=8\n"
                                                 for name in self.cluster.names))
            (admin / "allowed_users").write_text(f"{self.user}\n")
            (admin / "distribution_rules").write_text("even\n")
            (admin / "node_check_interval").write_text("5\n")
            subprocess.run(["chown", "-R", f"{self.user}:", str(self.qpy_home)], check=True)
        if TRACE:
            self.trace_bash()

    def trace_bash(self) -> None:
        """The user's bash marks the start of its login files and its first prompt."""
        trace = os.environ["QPY_TRACE"]
        open(trace, "w").close()
        subprocess.run(["chown", f"{self.user}:", trace], check=True)
        profile, rc = self.home / ".profile", self.home / ".bashrc"
        profile.write_text(BASH_MARK.format("profile") + profile.read_text())
        rc.write_text(BASH_MARK.format("bashrc") + rc.read_text() + BASH_MARK.format(
            "bashrc read") + 'PROMPT_COMMAND=\'' + BASH_MARK.format("first prompt").strip()
            .replace("'", "'\\''") + '; PROMPT_COMMAND=\'\n')

    def argv(self, argv: list[str]) -> list[str]:
        account = self.cluster.account()
        env = [f"HOME={self.home}", f"USER={self.user}", f"LOGNAME={self.user}",
               f"PATH={self.venv / 'venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
               f"QPY_HOME={self.qpy_home}", "TERM=xterm", "LANG=C.UTF-8",
               *([f"QPY_TRACE={os.environ['QPY_TRACE']}"] if TRACE else [])]
        return ["runuser", "-u", account.name, "--", "/usr/bin/env", "-i", *env, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(list(argv)), cwd=self.home, capture_output=True,
                              text=True, check=check, timeout=WAIT)

    def close(self) -> None:
        self.run("qpy", "kill", "all", check=False)
        self.run("qpy", "finish", check=False)
        for pid_file in (self.qpy_home / "master.pid", self.qpy_home / "embedded" /
                         "multiuser.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        self.cluster.teardown()
        import shutil

        shutil.rmtree(self.venv, ignore_errors=True)


def until(fd: int, needle: bytes, deadline: float) -> bytes:
    """Read the terminal until ``needle`` shows (or it closes)."""
    seen = b""
    while needle not in seen:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {needle!r} on the terminal; it shows {seen[-3000:]!r}")
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        seen += data
    return seen


def time_to_prompt(world: World, pin: list[str], host: str) -> float:
    """Milliseconds from starting qpy connect to the session's prompt on the terminal."""
    argv = world.argv(["qpy", "connect", "--new", "-m", "0.1", *pin])
    prompt = f"{world.user}@{host}".encode()  # the prompt of Debian's default .bashrc
    t0 = time.perf_counter()
    mark("bench: connect started")
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(world.home)
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        until(fd, prompt, time.monotonic() + WAIT)
        elapsed = (time.perf_counter() - t0) * 1000
        mark("bench: prompt seen")
        os.write(fd, b"exit\r")
        until(fd, b"\0never", time.monotonic() + WAIT)  # to the end of qpy connect
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return elapsed


def timed(world: World, argv: list[str]) -> float:
    t0 = time.perf_counter()
    world.run(*argv)
    return (time.perf_counter() - t0) * 1000


def tmux_new(world: World, i: int) -> float:
    """``tmux new-session -d`` on a fresh server (a socket of its own), then ended."""
    sock = f"/tmp/qpyb-{os.getpid()}-{i}"
    elapsed = timed(world, ["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d"])
    world.run("tmux", "-S", sock, "kill-server", check=False)
    return elapsed


def main() -> None:
    nodes = nodes_option(sys.argv)
    if TRACE:
        sys.argv.remove("--trace")
        os.environ["QPY_TRACE"] = f"/tmp/qpy-trace-{os.getpid()}"
    world = World(nodes)
    try:
        pin, host = (["-a", "node1"], "node1") if nodes else ([], os.uname().nodename)
        world.run("qpy", "sub", *pin, "-m", "0.1", "true")  # the daemons and the launcher
        if nodes:
            world.run("ssh", "node1", "true")  # the user's multiplexed connection
        time_to_prompt(world, pin, host)  # a first session: the node's page cache
        connect = statistics.median(time_to_prompt(world, pin, host) for _ in range(RUNS))
        tmux = statistics.median(tmux_new(world, i) for i in range(RUNS))
        ssh = statistics.median(timed(world, ["ssh", "node1", "true"]) for _ in range(RUNS)) \
            if nodes else None
    finally:
        world.close()
    where = f" (node1 of {nodes} over ssh)" if nodes else " (this machine)"
    base = f"tmux new -d {tmux:.1f} ms"
    if ssh is not None:
        base = f"ssh node1 true (multiplexed) {ssh:.1f} ms ({connect / ssh:.1f}x), " + base
    print(f"connect{where}: time-to-prompt {connect:.1f} ms (median of {RUNS}); "
          f"baselines: {base}")
    if TRACE:
        steps = hops(os.environ["QPY_TRACE"], "bench: connect started", "bench: prompt seen",
                     "\n  ")
        print(f"trace time-to-prompt (medians, ms):\n  {steps}")
        os.unlink(os.environ["QPY_TRACE"])


if __name__ == "__main__":
    main()
