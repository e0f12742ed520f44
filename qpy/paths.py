"""Where each tier keeps its files, and how secrets are written.

Every secret file is created 0600 inside a 0700 directory, atomically, so a reader
never sees a half-written key and nobody else can read it at any moment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def qpy_home() -> Path:
    """The user's qpy home: ``$QPY_HOME`` or ``~/.qpy``."""
    return Path(os.environ.get("QPY_HOME") or Path.home() / ".qpy")


def admin_home() -> Path:
    """The multiuser admin's home: ``$QPY_ADMIN_HOME`` or ``~/.qpy-multiuser``."""
    return Path(os.environ.get("QPY_ADMIN_HOME") or Path.home() / ".qpy-multiuser")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and force mode 0700: it holds keys and sockets."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file readable only by its owner, replacing it atomically."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def new_key() -> str:
    """A fresh secret as hex text, so key files stay printable and copyable."""
    return secrets.token_hex(KEY_BYTES)


def read_key(path: Path) -> bytes:
    """Read a key file; refuse one that others could read, because it would not be a secret."""
    st = path.stat()
    if st.st_mode & 0o077:
        raise PermissionError(f"key file {path} is readable by others (mode {st.st_mode & 0o777:o})")
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"key file {path} is empty")
    return key.encode()


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``, created on first use; keys persist because clients hold copies."""
    if not path.exists():
        ensure_private_dir(path.parent)
        write_private(path, new_key() + "\n")
    return read_key(path)
