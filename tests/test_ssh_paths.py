"""Where qpy keeps its ssh control sockets (``qpy.ssh.control_dir``): always in a
directory of the user's own, 0700, never at a name another user could create first.

The tests call ``control_dir`` in this process; "another user" is a directory owned by
another uid (``nobody``), which needs root to make (skipped otherwise). The end-to-end
case, another real account pre-creating the old /tmp name while the user's jobs must
still reach a real node over ssh, is in test_remote_nodes.py.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from qpy import ssh

LONG = "a-directory-name-long-enough-that-no-socket-fits-below-it"


def owner_and_mode(path: str | Path) -> tuple[int, int]:
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode), path
    return st.st_uid, stat.S_IMODE(st.st_mode)


def private(path: str | Path) -> bool:
    return owner_and_mode(path) == (os.getuid(), 0o700)


def other_uid() -> int:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI is set, so not skipping: needs root to make another user's "
                        "directory", pytrace=False)
        pytest.skip("needs root to make another user's directory")
    return pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def base(monkeypatch):
    """A short directory of the test's under /tmp (pytest's own are too long for a
    socket path below them); no XDG_RUNTIME_DIR unless a test sets one. What the tests
    make under /tmp is removed afterwards."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    path = Path(tempfile.mkdtemp(prefix="qpyssh-", dir="/tmp"))
    made: list[str] = []
    yield path, made
    record = path / LONG / ".qpy" / "ssh_dir"
    if record.exists():
        made.append(record.read_text().strip())
    for directory in made:
        if os.path.islink(directory):
            os.unlink(directory)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def long_home(base):
    """A qpy home too long for sockets below it, and the list of directories to remove."""
    path, made = base
    home = path / LONG / ".qpy"
    home.mkdir(parents=True, mode=0o700)
    return home, made


def old_name(home: Path) -> str:
    """Where qpy put the sockets of a long home before: a name anybody could predict."""
    digest = hashlib.sha1(os.fsencode(str(home))).hexdigest()[:12]
    return f"/tmp/qpy-ssh-{os.getuid()}-{digest}"


def test_a_short_home_keeps_the_sockets_inside(base):
    home = base[0] / ".qpy"
    home.mkdir(mode=0o700)
    path = ssh.control_dir(str(home))
    assert path == str(home / "ssh")
    assert private(path)


def test_a_long_home_gets_a_private_directory_of_its_own(long_home):
    home, _ = long_home
    path = ssh.control_dir(str(home))
    assert len(path) <= ssh._SOCKET_ROOM
    assert private(path)
    assert path != old_name(home)
    assert ssh.control_dir(str(home)) == path  # recorded in the home, used again


def test_the_old_predictable_name_made_by_another_user_is_not_used(long_home):
    home, made = long_home
    uid = other_uid()
    trap = old_name(home)
    os.mkdir(trap, 0o777)
    made.append(trap)
    os.chown(trap, uid, -1)
    os.chmod(trap, 0o777)
    path = ssh.control_dir(str(home))
    assert path != trap
    assert private(path)


def test_a_recorded_directory_taken_over_is_replaced(long_home):
    """The recorded directory is checked at each use: gone (a /tmp cleaner) and made
    again by another user, or replaced by a symbolic link, it is not used."""
    home, made = long_home
    uid = other_uid()
    first = ssh.control_dir(str(home))
    os.rmdir(first)
    os.mkdir(first, 0o700)
    os.chown(first, uid, -1)
    made.append(first)
    second = ssh.control_dir(str(home))
    assert second != first and private(second)
    os.rmdir(second)
    os.symlink(home, second)  # a directory of ours, but reached through a link
    made.append(second)
    third = ssh.control_dir(str(home))
    assert third not in (first, second) and private(third)
    assert ssh.control_dir(str(home)) == third


def test_a_private_runtime_directory_is_used(base, long_home, monkeypatch):
    home, _ = long_home
    runtime = base[0] / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    path = ssh.control_dir(str(home))
    assert Path(path).parent == runtime
    assert private(path)


@pytest.mark.parametrize("problem", ["open", "other user", "link", "relative"])
def test_a_runtime_directory_that_is_not_private_is_not_used(base, long_home, monkeypatch,
                                                             problem):
    home, _ = long_home
    tmp_path = base[0]
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    value = str(runtime)
    if problem == "open":
        os.chmod(runtime, 0o1777)
    elif problem == "other user":
        os.chown(runtime, other_uid(), -1)
    elif problem == "link":
        os.symlink(runtime, tmp_path / "link")
        value = str(tmp_path / "link")
    else:
        value = "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    path = ssh.control_dir(str(home))
    assert not path.startswith((str(runtime), str(tmp_path / "link")))
    assert private(path)
