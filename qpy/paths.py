"""Where each tier keeps its files, and how secrets are written.

Every secret file is created 0600 inside a 0700 directory, atomically, so a reader
never sees a half-written key and nobody else can read it at any moment. Plain ``os.path``
strings (no pathlib): this module is on the CLI's start-up path.
"""

from __future__ import annotations

import os

KEY_BYTES = 32
PathLike = str | os.PathLike
# A user's cluster bundle: the multiuser's address and port and the user's own key.
BUNDLE = ("multiuser_connection_address", "multiuser_connection_port",
          "multiuser_connection_conn_key")


def qpy_home() -> str:
    """The user's qpy home: ``$QPY_HOME`` or ``~/.qpy``."""
    return os.environ.get("QPY_HOME") or os.path.join(os.path.expanduser("~"), ".qpy")


def admin_home() -> str:
    """The multiuser admin's home: ``$QPY_ADMIN_HOME`` or ``~/.qpy-multiuser``."""
    return (os.environ.get("QPY_ADMIN_HOME")
            or os.path.join(os.path.expanduser("~"), ".qpy-multiuser"))


def embedded_home(home: PathLike) -> str:
    """Where a user's personal multiuser (the embedded default) keeps its files."""
    return os.path.join(home, "embedded")


def ensure_private_dir(path: PathLike) -> PathLike:
    """Create ``path`` (and parents) and force mode 0700: it holds keys and sockets."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path


def write_private(path: PathLike, data: bytes | str) -> None:
    """Write a file readable only by its owner, replacing it atomically."""
    raw = data.encode() if isinstance(data, str) else data
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def new_key() -> str:
    """A fresh secret as hex text, so key files stay printable and copyable."""
    return os.urandom(KEY_BYTES).hex()


def read_key(path: PathLike) -> bytes:
    """Read a key file; refuse one that others could read, because it would not be a secret."""
    st = os.stat(path)
    if st.st_mode & 0o077:
        mode = st.st_mode & 0o777
        raise PermissionError(f"key file {os.fspath(path)} is readable by others (mode {mode:o})")
    with open(path) as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"key file {os.fspath(path)} is empty")
    return key.encode()


def load_or_create_key(path: PathLike) -> bytes:
    """The key at ``path``, created on first use; keys persist because clients hold copies."""
    if not os.path.exists(path):
        ensure_private_dir(os.path.dirname(os.fspath(path)))
        write_private(path, new_key() + "\n")
    return read_key(path)
