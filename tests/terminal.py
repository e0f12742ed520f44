"""A real terminal for the tests of ``qpy connect`` (not collected: no ``test_`` prefix).

An outer tmux server on a private socket plays the user's terminal emulator: each window
runs one command line as the user typed it, keys are typed into it with ``send-keys`` and
the screen is read with ``capture-pane``. Windows stay after their command ends, and the
command's exit status is written to a file, so a test reads both what was shown and how
the command exited. ``prefix`` runs every tmux command as another account (``runuser``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from conftest import wait_for

WAIT = 60.0  # only a guard against a hang


class Terminal:
    def __init__(self, directory: Path, env: dict[str, str], prefix: list[str] | None = None,
                 size: tuple[int, int] = (160, 45)) -> None:
        self.dir = directory
        self.sock = directory / "term"
        self.env = env
        self.prefix = list(prefix or [])
        self.size = size
        self.started = False

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.prefix, "tmux", "-S", str(self.sock), *args],
                              env=self.env, capture_output=True, text=True, timeout=WAIT,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def status_file(self, name: str) -> Path:
        return self.dir / f"status-{name}"

    def run(self, name: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a new window ``name``, as if typed at a shell prompt in ``cwd``."""
        status = self.status_file(name)
        status.unlink(missing_ok=True)
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        line = (f"trap : INT; cd {shlex.quote(str(cwd))} && {exports}{shlex.join(argv)}; "
                f"echo $? > {shlex.quote(str(status))}")
        if not self.started:
            width, height = self.size
            self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "term", "-x", str(width),
                      "-y", str(height), "-n", name, "sh", "-c", line)
            self.tmux("set-option", "-g", "remain-on-exit", "on")
            self.started = True
        else:
            self.tmux("new-window", "-d", "-t", "term", "-n", name, "sh", "-c", line)

    def screen(self, name: str) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", f"term:{name}").stdout

    def send(self, name: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", f"term:{name}", *keys)

    def type(self, name: str, line: str) -> None:
        """Type ``line`` literally, then Enter."""
        self.tmux("send-keys", "-t", f"term:{name}", "-l", line)
        self.send(name, "Enter")

    def status(self, name: str) -> int | None:
        try:
            return int(self.status_file(name).read_text())
        except (OSError, ValueError):
            return None

    def wait_status(self, name: str, timeout: float = WAIT) -> int:
        try:
            wait_for(lambda: self.status(name) is not None, timeout, f"{name} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its screen:\n{self.safe_screen(name)}") from None
        return self.status(name)

    def wait_screen(self, name: str, text: str, timeout: float = WAIT) -> str:
        try:
            return wait_for(lambda: text in (s := self.screen(name)) and s, timeout,
                            f"{text!r} on the screen of {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.safe_screen(name)}") from None

    def safe_screen(self, name: str) -> str:
        try:
            return self.screen(name)
        except AssertionError as exc:
            return str(exc)

    def close(self) -> None:
        if self.started:
            self.tmux("kill-server", check=False)
            self.started = False
        if os.path.exists(self.sock):
            os.unlink(self.sock)
