"""How qpy reaches a node: the OpenSSH client, with the user's own configuration.

Both the masters (job launchers) and the multiuser (node monitoring) run one long-lived
``ssh`` session per node that speaks JSON lines, so a launch is a line written to a pipe,
not a connection. Around that, qpy adds only what a daemon needs and the user's config
has not already chosen:

* ``BatchMode=yes`` always: there is nobody to type a password or answer a prompt;
* ``StrictHostKeyChecking=yes`` always: a host key must already be in known_hosts
  (``accept-new`` or ``no`` in the user's config would accept a key blindly);
* multiplexing (``ControlMaster=auto`` on a private socket directory) unless the user's
  config sets ``ControlMaster`` or ``ControlPath`` itself. qpy's sessions are long-lived,
  so each one is itself the master connection (``ControlPersist=no``: a background master
  would put one more process hop on every message), and any other session qpy opens to
  the node meanwhile rides on it;
* ``ConnectTimeout`` and ``ServerAliveInterval`` unless set, so a dead node is noticed.

Everything else (user names, ports, keys, jump hosts, known_hosts files) comes from the
user's ``~/.ssh/config`` and the system's, as with a plain ``ssh``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable

# Addresses that mean this machine: a node there is run and measured without ssh.
LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1", socket.gethostname(),
                             socket.getfqdn()})
CONNECT_TIMEOUT = 10
ALIVE_INTERVAL = 5
PERSIST = "no"
_SOCKET_ROOM = 107 - 1 - 40 - 18  # sun_path minus "/", %C (40) and ssh's temporary suffix
_options_cache: dict[str, list[str]] = {}
_cache_lock = threading.Lock()


class SshMissing(OSError):
    """There is no ssh client on this machine."""


def ssh_binary() -> str:
    found = shutil.which("ssh") or ("/usr/bin/ssh" if os.access("/usr/bin/ssh", os.X_OK) else None)
    if found is None:
        raise SshMissing("the OpenSSH client (ssh) is not installed")
    return found


def effective_config(address: str) -> dict[str, str]:
    """What ``ssh -G`` resolves for ``address`` from the user's and the system's config."""
    proc = subprocess.run([ssh_binary(), "-G", address], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    config: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), value)
    return config


def control_dir(home: str) -> str:
    """A private directory for control sockets, short enough for a socket path: under
    ``home`` when it fits, else under /tmp named after ``home``."""
    path = os.path.join(home, "ssh")
    if len(path) > _SOCKET_ROOM:
        digest = hashlib.sha1(os.fsencode(home)).hexdigest()[:12]
        path = f"/tmp/qpy-ssh-{os.getuid()}-{digest}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def options(address: str, home: str) -> list[str]:
    """The ``-o`` options qpy adds for ``address`` (cached: the config does not change
    under a running daemon often enough to pay ``ssh -G`` per session)."""
    with _cache_lock:
        cached = _options_cache.get(address)
    if cached is not None:
        return cached
    config = effective_config(address)
    opts = ["-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if config.get("controlmaster", "false") == "false" and "controlpath" not in config:
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir(home)}/%C",
                 "-o", f"ControlPersist={PERSIST}"]
    if config.get("connecttimeout", "none") == "none":
        opts += ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    if config.get("serveraliveinterval", "0") == "0":
        opts += ["-o", f"ServerAliveInterval={ALIVE_INTERVAL}", "-o", "ServerAliveCountMax=3"]
    with _cache_lock:
        _options_cache[address] = opts
    return opts


def command(address: str, remote: list[str], home: str) -> list[str]:
    """argv that runs ``remote`` (quoted for the remote shell) on ``address``."""
    return [ssh_binary(), *options(address, home), address, shlex.join(remote)]


def terminal_command(address: str, remote: list[str], home: str) -> list[str]:
    """argv that runs ``remote`` on ``address`` on the user's terminal (``ssh -t``, for
    ``qpy connect``), with qpy's options otherwise: it rides on the master's connection
    to the node when there is one."""
    opts = [option for option in options(address, home) if option != "-T"]
    return [ssh_binary(), "-t", *opts, address, shlex.join(remote)]


def python_stdin_program(name: str) -> list[str]:
    """The remote command of a stdlib-only program sent down the session's stdin: the node
    needs only ``python3``, not a qpy installation. The master writes the source's length
    on one line and then the source; the program then reads its own input from fd 0."""
    boot = ("import sys;b=sys.stdin.buffer;n=int(b.readline());"
            f"exec(compile(b.read(n),{name!r},'exec'),{{'__name__':'__main__'}})")
    return ["python3", "-S", "-u", "-c", boot]


def source_preamble(path: str) -> bytes:
    """The bytes that ``python_stdin_program`` expects first: length line, then source."""
    with open(path, "rb") as f:
        source = f.read()
    return f"{len(source)}\n".encode() + source


def last_error(lines: Iterable[str], default: str = "the ssh session ended") -> str:
    """The line of ssh's stderr that says what went wrong (its last non-empty one)."""
    for line in reversed(list(lines)):
        if line.strip():
            return line.strip()
    return default
