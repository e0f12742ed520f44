"""Who may talk to the daemons, and how secrets are kept: file modes, keys per user, the
admin key, and that a pickled payload is never unpickled.

Runs against the real master and embedded multiuser of the ``qpy`` fixture.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from multiprocessing.connection import AuthenticationError, Client

import pytest
from conftest import NODE, start_daemons

from qpy import paths, wire

REPLY_WAIT = 60.0  # only a guard against a hang
REFUSED = (AuthenticationError, EOFError, ConnectionResetError, BrokenPipeError)


# -- helpers -------------------------------------------------------------------------------


def admin_home(qpy):
    return qpy.home / "embedded"


def master_address(qpy) -> str:
    return str(qpy.home / "master.sock")


def master_key(qpy) -> bytes:
    return paths.read_key(qpy.home / "master.key")


def user_key(qpy) -> bytes:
    return qpy.multiuser_key()


def admin_key(qpy) -> bytes:
    return paths.read_key(admin_home(qpy) / "admin.key")


def multiuser_address(qpy) -> tuple[str, int]:
    return qpy.multiuser_address()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_master_serves(qpy, master_pid: int) -> None:
    assert qpy.pid("master") == master_pid
    with wire.connect(master_address(qpy), wire.whoami(), master_key(qpy)) as conn:
        reply = wire.call(conn, {"type": "ping"}, REPLY_WAIT)
    assert reply["ok"] is True and reply["pid"] == master_pid


def assert_multiuser_serves(qpy, multiuser_pid: int) -> None:
    assert qpy.pid("multiuser") == multiuser_pid
    with wire.connect(multiuser_address(qpy), wire.whoami(), user_key(qpy)) as conn:
        reply = wire.call(conn, {"type": "status"}, REPLY_WAIT)
    assert reply["ok"] is True and reply["nodes"]


def admin_call(qpy, command: str, args: list[str] | None = None) -> dict:
    with wire.connect(multiuser_address(qpy), "@admin", admin_key(qpy)) as conn:
        return wire.call(conn, {"type": "admin", "command": command, "args": args or []},
                         REPLY_WAIT)


# -- file modes ----------------------------------------------------------------------------


def test_private_file_modes(qpy):
    start_daemons(qpy)
    home = qpy.home
    assert mode(home) == 0o700
    assert mode(home / "master.key") == 0o600
    for name in paths.BUNDLE:  # the personal multiuser hands out no bundle
        assert not (home / name).exists(), name
    admin = admin_home(qpy)
    assert mode(admin) == 0o700
    assert mode(admin / "keys") == 0o700
    assert mode(admin / "admin.key") == 0o600
    assert mode(admin / "keys" / wire.whoami()) == 0o600
    assert mode(admin / "multiuser_connection_port") == 0o600
    # the master's socket is reachable by its owner only
    assert stat.S_ISSOCK((home / "master.sock").stat().st_mode)
    assert mode(home / "master.sock") & 0o077 == 0
    # no secret was left world-readable anywhere under the homes
    for path in home.rglob("*"):
        if path.is_file() and ("key" in path.name or path.name.startswith("multiuser_conn")):
            assert mode(path) & 0o077 == 0, path


def test_the_personal_multiuser_gives_the_user_their_own_key(qpy):
    start_daemons(qpy)
    key = (admin_home(qpy) / "keys" / wire.whoami()).read_text().strip()
    assert key != (admin_home(qpy) / "admin.key").read_text().strip()
    assert key != (qpy.home / "master.key").read_text().strip()


# -- the master ----------------------------------------------------------------------------


def test_master_refuses_wrong_key_and_keeps_serving(qpy):
    master_pid, _ = start_daemons(qpy)
    wrong = paths.new_key().encode()
    assert wrong != master_key(qpy)
    for _ in range(3):
        with pytest.raises(REFUSED):
            wire.connect(master_address(qpy), wire.whoami(), wrong)
    assert_master_serves(qpy, master_pid)


def test_master_refuses_hello_naming_another_user(qpy):
    master_pid, _ = start_daemons(qpy)
    others = {"root", "nobody", "someone-else", "@admin", wire.whoami() + "x"} - {wire.whoami()}
    for user in sorted(others):
        with pytest.raises(REFUSED):
            wire.connect(master_address(qpy), user, master_key(qpy))
    assert_master_serves(qpy, master_pid)


@pytest.mark.parametrize("hello", [
    b"not json",
    json.dumps({"v": 1, "type": "ping", "user": "x"}).encode(),
    json.dumps({"v": 1, "type": "hello"}).encode(),
    json.dumps({"v": 1, "type": "hello", "user": ""}).encode(),
    json.dumps({"v": 1, "type": "hello", "user": ["me"]}).encode(),
    json.dumps({"v": 2, "type": "hello", "user": "me"}).encode(),
    json.dumps({"v": 1, "type": "hello", "user": "u" * (2 * wire.HELLO_MAX)}).encode(),
])
def test_bad_hello_is_dropped_without_a_challenge(qpy, hello):
    master_pid, multiuser_pid = start_daemons(qpy)
    for address in (master_address(qpy), multiuser_address(qpy)):
        conn = Client(address)
        try:
            try:
                conn.send_bytes(hello)
            except OSError:
                pass
            assert conn.poll(REPLY_WAIT)
            with pytest.raises((EOFError, OSError)):
                conn.recv_bytes(wire.MAX_MESSAGE)
        finally:
            conn.close()
    assert_master_serves(qpy, master_pid)
    assert_multiuser_serves(qpy, multiuser_pid)


# -- the multiuser -------------------------------------------------------------------------


def test_multiuser_accepts_the_users_key(qpy):
    _, multiuser_pid = start_daemons(qpy)
    assert_multiuser_serves(qpy, multiuser_pid)


def test_multiuser_refuses_user_key_claiming_admin(qpy):
    _, multiuser_pid = start_daemons(qpy)
    with pytest.raises(REFUSED):
        wire.connect(multiuser_address(qpy), "@admin", user_key(qpy))
    assert_multiuser_serves(qpy, multiuser_pid)


def test_multiuser_refuses_admin_key_claiming_the_user(qpy):
    _, multiuser_pid = start_daemons(qpy)
    with pytest.raises(REFUSED):
        wire.connect(multiuser_address(qpy), wire.whoami(), admin_key(qpy))
    assert_multiuser_serves(qpy, multiuser_pid)


def test_multiuser_refuses_master_key(qpy):
    _, multiuser_pid = start_daemons(qpy)
    with pytest.raises(REFUSED):
        wire.connect(multiuser_address(qpy), wire.whoami(), master_key(qpy))
    assert_multiuser_serves(qpy, multiuser_pid)


@pytest.mark.parametrize("user", ["nobody-here", "root", "@root", "admin"])
def test_multiuser_refuses_unknown_user(qpy, user):
    _, multiuser_pid = start_daemons(qpy)
    if user == wire.whoami():
        user = "not-" + user
    with pytest.raises(REFUSED):
        wire.connect(multiuser_address(qpy), user, user_key(qpy))
    assert_multiuser_serves(qpy, multiuser_pid)


@pytest.mark.parametrize("command", ["finish", "nodes", "variables", "status", "adduser",
                                     "removeuser", "distribute", "__remove_job"])
def test_user_key_cannot_run_admin_commands(qpy, command):
    master_pid, multiuser_pid = start_daemons(qpy)
    args = {"adduser": ["mallory"], "removeuser": [wire.whoami()],
            "__remove_job": [wire.whoami(), "1"]}.get(command, [])
    with wire.connect(multiuser_address(qpy), wire.whoami(), user_key(qpy)) as conn:
        reply = wire.call(conn, {"type": "admin", "command": command, "args": args},
                          REPLY_WAIT)
        assert reply["ok"] is False
        assert "admin" in reply["error"]
        # the connection itself stays usable for what the user may do
        assert wire.call(conn, {"type": "status"}, REPLY_WAIT)["ok"] is True
    assert_multiuser_serves(qpy, multiuser_pid)
    # nothing changed: the user is still allowed, mallory is not
    allowed = (admin_home(qpy) / "allowed_users").read_text().split()
    assert wire.whoami() in allowed and "mallory" not in allowed
    assert not (admin_home(qpy) / "keys" / "mallory").exists()
    assert qpy.run("status").returncode == 0
    assert qpy.pid("master") == master_pid


def test_admin_key_status_and_variables(qpy):
    _, multiuser_pid = start_daemons(qpy)
    status = admin_call(qpy, "status")
    assert status["ok"] is True
    assert wire.whoami() in [u["user"] for u in status["users"]]
    assert status["nodes"] and status["nodes"][0]["name"] == NODE
    variables = admin_call(qpy, "variables")
    assert variables["ok"] is True
    data = variables["variables"]
    assert data["rules"]["kind"] == "even"
    assert data["allowed_users"] == [wire.whoami()]
    assert wire.whoami() in data["users"]
    assert json.loads(variables["text"]) == data
    assert_multiuser_serves(qpy, multiuser_pid)


def test_admin_session_is_not_a_master(qpy):
    _, multiuser_pid = start_daemons(qpy)
    with wire.connect(multiuser_address(qpy), "@admin", admin_key(qpy)) as conn:
        reply = wire.call(conn, {"type": "hello", "running": [], "queue_size": 0}, REPLY_WAIT)
        assert reply["ok"] is False and "admin" in reply["error"]
        reply = wire.call(conn, {"type": "slots", "release": [], "want": [], "queue_size": 0},
                          REPLY_WAIT)
        assert reply["ok"] is False
        reply = wire.call(conn, {"type": "admin", "command": "nosuch", "args": []}, REPLY_WAIT)
        assert reply["ok"] is False and "nosuch" in reply["error"]
    assert_multiuser_serves(qpy, multiuser_pid)


def test_removed_user_key_no_longer_works(qpy):
    """A removed user's key still proves who they are, so that they can be told why
    nothing is served: every request is denied with the reason, and the session ends."""
    _, multiuser_pid = start_daemons(qpy)
    added = admin_call(qpy, "adduser", ["mallory"])
    assert added["ok"] is True
    key = added["bundle"]["multiuser_connection_conn_key"].encode()
    assert mode(admin_home(qpy) / "keys" / "mallory") == 0o600
    with wire.connect(multiuser_address(qpy), "mallory", key) as conn:
        assert wire.call(conn, {"type": "status"}, REPLY_WAIT)["ok"] is True
    assert admin_call(qpy, "removeuser", ["mallory"])["ok"] is True
    for request in ({"type": "status"}, {"type": "hello", "running": [], "queue_size": 0},
                    {"type": "slots", "release": [], "want": [], "queue_size": 0}):
        with wire.connect(multiuser_address(qpy), "mallory", key) as conn:
            reply = wire.call(conn, request, REPLY_WAIT)
            assert reply["ok"] is False and reply["code"] == "denied", reply
            assert "mallory is not allowed" in reply["error"], reply
            with pytest.raises((EOFError, OSError)):
                wire.call(conn, {"type": "status"}, REPLY_WAIT)
    assert_multiuser_serves(qpy, multiuser_pid)


# -- pickle is never unpickled -------------------------------------------------------------


class _Marker:
    """Unpickling this creates the file at ``path``: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_payload(path) -> bytes:
    return pickle.dumps({"v": 1, "type": "ping", "x": _Marker(str(path))})


def test_pickled_payload_is_refused_and_never_unpickled(qpy, tmp_path):
    master_pid, multiuser_pid = start_daemons(qpy)
    # the payload is real: unpickling it here, on a throw-away path, creates that file
    control = tmp_path / "control"
    pickle.loads(evil_payload(control)).get("x").close()
    assert control.exists()

    marker = tmp_path / "unpickled"
    master = wire.connect(master_address(qpy), wire.whoami(), master_key(qpy))
    multiuser = wire.connect(multiuser_address(qpy), wire.whoami(), user_key(qpy))
    for conn in (master, multiuser):
        with conn:
            conn.send_bytes(evil_payload(marker))
            assert conn.poll(REPLY_WAIT)
            reply = wire.decode(conn.recv_bytes(wire.MAX_MESSAGE))
            assert reply["ok"] is False
            assert "malformed" in reply["error"]
            # and the connection keeps working with JSON
            assert wire.call(conn, {"type": "status"}, REPLY_WAIT)["ok"] is True
    assert not marker.exists()
    assert_master_serves(qpy, master_pid)
    assert_multiuser_serves(qpy, multiuser_pid)
    assert not marker.exists()


# -- paths.read_key ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o666, 0o610])
def test_read_key_refuses_key_others_can_access(tmp_path, bits):
    key = tmp_path / "key"
    key.write_text("secret\n")
    os.chmod(key, bits)
    with pytest.raises(PermissionError) as exc:
        paths.read_key(key)
    assert str(key) in str(exc.value)
    assert f"{bits:o}" in str(exc.value)


@pytest.mark.parametrize("bits", [0o600, 0o400])
def test_read_key_accepts_private_key(tmp_path, bits):
    key = tmp_path / "key"
    key.write_text("  secret\n")
    os.chmod(key, bits)
    assert paths.read_key(key) == b"secret"


def test_read_key_refuses_empty_key(tmp_path):
    key = tmp_path / "key"
    key.write_text("\n")
    os.chmod(key, 0o600)
    with pytest.raises(ValueError, match="empty"):
        paths.read_key(key)


def test_load_or_create_key_makes_private_files(tmp_path):
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "sub" / "dir" / "the.key"
    key = paths.load_or_create_key(path)
    assert len(key) == 2 * paths.KEY_BYTES
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert paths.load_or_create_key(path) == key  # persisted, not regenerated
    assert paths.load_or_create_key(tmp_path / "other.key") != key


def test_ensure_private_dir_tightens_an_open_directory(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    paths.ensure_private_dir(path)
    assert mode(path) == 0o700


def test_write_private_replaces_a_readable_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("old")
    os.chmod(path, 0o644)
    paths.write_private(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


# -- where the daemons import from ---------------------------------------------------------

PLANTED = "import pathlib; pathlib.Path({marker!r}).write_text(__file__)\n"


def plant_packages(where, marker, packages=("qpy", "qpy_master", "qpy_multiuser")) -> None:
    """Packages named like qpy's in ``where`` whose import writes ``marker``: what another
    user could leave in a shared directory."""
    for package in packages:
        (where / package).mkdir()
        for name in ("__init__.py", "__main__.py"):
            (where / package / name).write_text(PLANTED.format(marker=str(marker)))


def test_daemons_never_import_from_the_callers_directory_or_pythonpath(qpy):
    """``qpy sub`` typed in a directory holding a package named like a daemon's, with
    PYTHONPATH naming another such directory: the master and the embedded multiuser
    start from their installation all the same, and nothing planted runs."""
    planted = qpy.root / "planted"
    planted.mkdir()
    marker = qpy.root / "planted_code_ran"
    plant_packages(qpy.work, marker)
    plant_packages(planted, marker, ("qpy_master", "qpy_multiuser"))  # the CLI's own
    env = {**qpy.env, "PYTHONPATH": str(planted)}  # PYTHONPATH is the user's to choose
    job = int(qpy.run("sub", "echo", "hi", env=env).stdout.split()[1])
    record = qpy.wait_status(job)
    assert record["exit_code"] == 0, record
    assert (qpy.work / f"job_{job}.out").read_text() == "hi\n"
    assert not marker.exists(), marker.read_text()
    for name in ("master", "multiuser"):
        cwd = os.readlink(f"/proc/{qpy.pid(name)}/cwd")
        assert cwd == "/", (name, cwd)


def test_a_relative_qpy_home_names_the_same_home_for_the_daemons(qpy):
    """The daemons run in /, so a relative QPY_HOME is made absolute before they start."""
    env = {**qpy.env, "QPY_HOME": "home"}
    job = int(qpy.run("sub", "pwd", env=env, cwd=qpy.root).stdout.split()[1])
    assert qpy.wait_status(job)["exit_code"] == 0
    assert (qpy.root / f"job_{job}.out").read_text() == f"{qpy.root}\n"
    assert qpy.pid("master") and qpy.pid("multiuser")
