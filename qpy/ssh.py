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

import contextlib
import hashlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable

from qpy import paths

# Addresses that mean this machine: a node there is run and measured without ssh.
LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1", socket.gethostname(),
                             socket.getfqdn()})
CONNECT_TIMEOUT = 10
ALIVE_INTERVAL = 5
PERSIST = "no"
_SOCKET_ROOM = 107 - 1 - 40 - 18  # sun_path minus "/", %C (40) and ssh's temporary suffix
_options_cache: dict[str, tuple[list[str], bool]] = {}
_cache_lock = threading.Lock()



def is_local(name: str | None, address: str | None) -> bool:
    """Whether the node ``name`` at ``address`` is this machine (its jobs run without ssh,
    by this interpreter): either of them names it. The masters' one test of it."""
    return address in LOCAL_ADDRESSES or name in LOCAL_ADDRESSES

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


def is_private_dir(path: str) -> bool:
    """Whether ``path`` is a directory of this user's that nobody else can enter or
    change, itself and not through a symbolic link."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (os.path.isabs(path) and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & 0o077)


def control_dir(home: str) -> str:
    """A private directory for control sockets, short enough for a socket path.

    Under ``home`` (the user's 0700 qpy home) when it fits. Else in the user's runtime
    directory (``$XDG_RUNTIME_DIR``) if it is private, or else in a directory of a random
    name made under /tmp and recorded in ``home/ssh_dir``. A predictable name in /tmp
    would let another user create it first: owning the directory, they could cut this
    user off every node, or serve a control socket of their own. So whatever is used is
    checked at each use, and a recorded directory that is no longer private (removed by
    a /tmp cleaner and made again by someone else) is replaced by a new one.
    """
    path = os.path.join(home, "ssh")
    if len(path) <= _SOCKET_ROOM:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not is_private_dir(path):
            raise PermissionError(f"{path} is not a private directory of this user")
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if is_private_dir(runtime):
        digest = hashlib.sha1(os.fsencode(home)).hexdigest()[:12]
        path = os.path.join(runtime, f"qpy-ssh-{digest}")
        if len(path) <= _SOCKET_ROOM:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            if is_private_dir(path):
                return path
    return _recorded_dir(home)


def _recorded_dir(home: str) -> str:
    """The random /tmp directory recorded in ``home``, made anew unless it is private."""
    record = os.path.join(home, "ssh_dir")
    try:
        with open(record) as f:
            path = f.read().strip()
    except FileNotFoundError:
        path = ""
    if path and len(path) <= _SOCKET_ROOM and is_private_dir(path):
        return path
    path = tempfile.mkdtemp(prefix=f"qpy-ssh-{os.getuid()}-", dir="/tmp")
    paths.write_private(record, path + "\n")
    return path


def options(address: str, home: str) -> list[str]:
    """The ``-o`` options qpy adds for ``address``. What the config decides is cached (it
    does not change under a running daemon often enough to pay ``ssh -G`` per session);
    the control directory is checked each time."""
    with _cache_lock:
        cached = _options_cache.get(address)
    if cached is None:
        cached = _config_options(effective_config(address))
        with _cache_lock:
            _options_cache[address] = cached
    opts, multiplex = cached
    if multiplex:
        opts = [*opts, "-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir(home)}/%C",
                "-o", f"ControlPersist={PERSIST}"]
    return opts


def _config_options(config: dict[str, str]) -> tuple[list[str], bool]:
    """The options for what ``config`` leaves open, and whether qpy multiplexes."""
    opts = ["-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if config.get("connecttimeout", "none") == "none":
        opts += ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    if config.get("serveraliveinterval", "0") == "0":
        opts += ["-o", f"ServerAliveInterval={ALIVE_INTERVAL}", "-o", "ServerAliveCountMax=3"]
    return opts, config.get("controlmaster", "false") == "false" and "controlpath" not in config


def command(address: str, remote: list[str], home: str) -> list[str]:
    """argv that runs ``remote`` (quoted for the remote shell) on ``address``."""
    return [ssh_binary(), *options(address, home), address, shlex.join(remote)]


def terminal_command(address: str, remote: list[str], home: str) -> list[str]:
    """argv that runs ``remote`` on ``address`` on the user's terminal (``ssh -t``, for
    ``qpy connect``), with qpy's options otherwise: it rides on the master's connection
    to the node when there is one."""
    opts = [option for option in options(address, home) if option != "-T"]
    return [ssh_binary(), "-t", *opts, address, shlex.join(remote)]


# Run by the boot below: puts each module sent in ``sys.modules`` under its name, then
# runs the program (sent last, as ``__main__``). One line per module: NAME LENGTH.
_LOADER = b"""\
import types
while True:
    module, size = b.readline().decode().split()
    code = compile(b.read(int(size)), name if module == "__main__" else module, "exec")
    if module == "__main__":
        break
    sys.modules[module] = types.ModuleType(module)
    exec(code, sys.modules[module].__dict__)
exec(code, {"__name__": "__main__"})
"""


def python_stdin_program(name: str, python: str = "python3") -> list[str]:
    """The command of a stdlib-only program sent down the session's stdin with the modules
    it imports (``source_preamble``): a node needs only ``python3``, not a qpy
    installation. The boot is one line, so any login shell passes it on; the program
    then reads its own input from fd 0. Isolated (``-I``): with ``-c`` the session's
    directory would come first on ``sys.path``, so a ``json.py`` in the remote home would
    be imported instead of the standard library's; PYTHON* variables are ignored too."""
    boot = (f"import sys;b=sys.stdin.buffer;name={name!r};"
            "exec(compile(b.read(int(b.readline())),'qpy-loader','exec'))")
    return [python, "-I", "-S", "-u", "-c", boot]


def source_preamble(path: str, *modules: str) -> bytes:
    """The bytes that ``python_stdin_program`` expects first: the loader, then each of
    ``modules`` (paths of stdlib-only modules, imported by their file's name), then the
    program at ``path``."""
    parts = [f"{len(_LOADER)}\n".encode(), _LOADER]
    for name, file in [*((os.path.basename(m)[:-3], m) for m in modules), ("__main__", path)]:
        with open(file, "rb") as f:
            source = f.read()
        parts += [f"{name} {len(source)}\n".encode(), source]
    return b"".join(parts)


def last_error(lines: Iterable[str], default: str = "the ssh session ended") -> str:
    """The line of ssh's stderr that says what went wrong (its last non-empty one)."""
    for line in reversed(list(lines)):
        if line.strip():
            return line.strip()
    return default
