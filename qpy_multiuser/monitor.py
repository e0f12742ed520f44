"""Node monitoring: up or down, cores, memory, load, outsiders and the disk of check_dir.

Each remote node has one watcher thread holding one ssh session (as the admin, through
``qpy.ssh``) at whose end ``probe.py`` prints a sample every interval. A session that ends
is re-opened at once; only if that fails, and once more an interval later, is the node
declared down (one refused connection, e.g. while every master reconnects at once, is not
a dead node), with ssh's own words as the reason (``Connection refused``, ``Host key
verification failed.``). A down node is
tried again every interval and is up again with its first sample. Local nodes are sampled
in this process by one thread, and are never down.

The interval comes from the admin's file ``node_check_interval`` (seconds, default 30);
``off`` there turns monitoring off, and every node is then taken as configured and up.
"""

from __future__ import annotations

import json
import logging
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qpy import cgroups, ssh
from qpy_multiuser import probe
from qpy_multiuser.nodes import Node

log = logging.getLogger("qpy.multiuser.monitor")
DEFAULT_INTERVAL = 30.0
DOWN_AFTER = 2  # failed connections in a row, an interval apart
PROBE = Path(probe.__file__)
CGROUPS = Path(cgroups.__file__)
Report = Callable[[str, str, dict], None]  # (node, address, sample)
Failure = Callable[[str, str, str], None]  # (node, address, reason)


def interval_setting(home: Path) -> float | None:
    """Seconds between samples, or None when monitoring is off."""
    path = home / "node_check_interval"
    if not path.exists():
        return DEFAULT_INTERVAL
    text = path.read_text().strip()
    if text.lower() in ("off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}: expected seconds or 'off', not {text!r}") from None
    if not 0.05 <= value <= 86400:
        raise ValueError(f"{path}: the interval must be between 0.05 and 86400 seconds")
    return value


class RemoteWatch:
    """One remote node's ssh session and the thread that reads its samples."""

    def __init__(self, node: Node, interval: float, home: str, report: Report,
                 failed: Failure) -> None:
        self.name, self.address, self.check_dir = node.name, node.address, node.check_dir
        self.cgroup = node.cgroup
        self.interval, self.home = interval, home
        self.report, self.failed = report, failed
        self.stopped = threading.Event()
        self.proc: subprocess.Popen | None = None
        threading.Thread(target=self._run, name=f"monitor-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            began = time.monotonic()
            samples, reason = self._session()
            if self.stopped.is_set():
                return
            failures = 0 if samples else failures + 1
            if samples and time.monotonic() - began > self.interval:
                continue  # a session that worked for a while ended: try again at once
            if failures >= DOWN_AFTER:
                self.failed(self.name, self.address, reason)
            self.stopped.wait(self.interval)

    def _session(self) -> tuple[int, str]:
        """Run one probe session; (samples received, why it ended)."""
        remote = [*ssh.python_stdin_program("qpy-probe"), f"{self.interval:g}",
                  self.check_dir or "", self.cgroup or ""]
        try:
            argv = ssh.command(self.address, remote, self.home)
            self.proc = proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                close_fds=True)
        except (OSError, subprocess.SubprocessError) as exc:
            return 0, f"cannot run ssh: {exc}"
        if self.stopped.is_set():  # stop() ran before this session existed
            proc.kill()
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(
            line.decode(errors="replace") for line in proc.stderr), daemon=True)
        reader.start()
        samples = 0
        try:
            proc.stdin.write(probe_preamble())
            proc.stdin.flush()
            samples = self._read_samples(proc)
        except OSError:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        return samples, ssh.last_error(errors)

    def _read_samples(self, proc: subprocess.Popen) -> int:
        """Hand each sample on until the session ends or stalls (no sample for three
        intervals beyond the connection time)."""
        samples = 0
        stall = 3 * self.interval + ssh.CONNECT_TIMEOUT
        while True:
            readable, _, _ = select.select([proc.stdout], [], [], stall)
            if not readable:
                log.warning("node %s: no sample for %.0f s", self.name, stall)
                return samples
            line = proc.stdout.readline()
            if not line:
                return samples
            try:
                sample = json.loads(line)
            except ValueError:
                log.error("node %s: bad sample %r", self.name, line[:200])
                return samples
            if not isinstance(sample, dict) or any(f not in sample for f in probe.SAMPLE):
                log.error("node %s: sample without %s: %r", self.name, probe.SAMPLE,
                          line[:200])
                return samples
            samples += 1
            self.report(self.name, self.address, sample)


def probe_preamble() -> bytes:
    """What the probe's boot reads first: the cgroups module, then the probe."""
    return ssh.source_preamble(str(PROBE), str(CGROUPS))


class LocalWatch:
    """Samples this machine's nodes in-process."""

    def __init__(self, nodes: list[Node], interval: float, report: Report) -> None:
        self.nodes = [(n.name, n.address, n.cgroup) for n in nodes]
        self.interval, self.report = interval, report
        self.sampler = probe.Sampler(next((n.check_dir for n in nodes if n.check_dir), None))
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="monitor-local", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                sample = self.sampler.sample()
            except OSError as exc:
                log.error("sampling this machine failed: %s", exc)
            else:
                for name, address, cgroup in self.nodes:  # each its own memory setting
                    self.report(name, address,
                                {**sample, "memory_limit": cgroups.node_memory_mode(cgroup)})
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - started)))


class Monitor:
    """The watchers of the current node list; rebuilt for nodes whose address changed."""

    def __init__(self, home: Path, interval: float, report: Report, failed: Failure) -> None:
        self.home, self.interval = str(home), interval
        self.report, self.failed = report, failed
        self.remote: dict[str, RemoteWatch] = {}
        self.local: LocalWatch | None = None

    def watch(self, nodes: dict[str, Node]) -> None:
        """Watch exactly ``nodes``: new ones get a watcher, removed ones lose theirs."""
        for name, watch in list(self.remote.items()):
            node = nodes.get(name)
            if node is None or node.address != watch.address \
                    or (node.check_dir, node.cgroup) != (watch.check_dir, watch.cgroup):
                watch.stop()
                del self.remote[name]
        for node in nodes.values():
            if not node.local and node.name not in self.remote:
                self.remote[node.name] = RemoteWatch(node, self.interval, self.home,
                                                     self.report, self.failed)
        if self.local is not None:
            self.local.stop()
        local = [n for n in nodes.values() if n.local]
        self.local = LocalWatch(local, self.interval, self.report) if local else None

    def stop(self) -> None:
        for watch in self.remote.values():
            watch.stop()
        if self.local is not None:
            self.local.stop()
