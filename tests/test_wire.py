"""The wire against the real daemons: every malformed request gets an error reply naming the
problem and the daemon keeps serving; oversized frames drop only their own connection; a
silent client blocks nobody; many clients at once are all served.

Each test starts the user's master and its embedded multiuser through the real CLI, then
talks to them directly with ``qpy.wire``.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Client

import pytest
from conftest import start_daemons

from qpy import paths, wire
from qpy_multiuser import __main__ as mu_main

REPLY_WAIT = 60.0  # only a guard against a hang; no test asserts a duration


# -- helpers -------------------------------------------------------------------------------


def master_address(qpy) -> str:
    return str(qpy.home / "master.sock")


def master_connect(qpy):
    key = paths.read_key(qpy.home / "master.key")
    return wire.connect(master_address(qpy), wire.whoami(), key)


def multiuser_address(qpy) -> tuple[str, int]:
    return qpy.multiuser_address()


def multiuser_connect(qpy):
    return wire.connect(multiuser_address(qpy), wire.whoami(), qpy.multiuser_key())


def reply_to(conn, raw: bytes) -> dict:
    """Send one raw frame and return the reply."""
    conn.send_bytes(raw)
    assert conn.poll(REPLY_WAIT), "no reply"
    return wire.decode(conn.recv_bytes(wire.MAX_MESSAGE))


def frame(msg: object) -> bytes:
    return json.dumps(msg).encode()


def assert_master_serves(qpy, conn, master_pid: int) -> None:
    """A good ping and check on ``conn``, answered by the same master process."""
    reply = wire.call(conn, {"type": "ping", "id": 1}, REPLY_WAIT)
    assert reply["ok"] is True and reply["re"] == 1
    assert reply["pid"] == master_pid
    reply = wire.call(conn, {"type": "check", "select": {}}, REPLY_WAIT)
    assert reply["ok"] is True and isinstance(reply["jobs"], list)


def assert_multiuser_serves(conn) -> None:
    reply = wire.call(conn, {"type": "status", "id": 2}, REPLY_WAIT)
    assert reply["ok"] is True and reply["re"] == 2
    assert wire.whoami() in [u["user"] for u in reply["users"]]
    assert reply["nodes"]


def assert_still_running(qpy, master_pid: int, multiuser_pid: int) -> None:
    assert qpy.pid("master") == master_pid
    assert qpy.pid("multiuser") == multiuser_pid
    with master_connect(qpy) as conn:
        assert_master_serves(qpy, conn, master_pid)
    with multiuser_connect(qpy) as conn:
        assert_multiuser_serves(conn)


def good_sub(qpy, **changes) -> dict:
    msg = {"v": 1, "type": "sub", "command": "true", "cwd": str(qpy.work), "env": {},
           "n_cores": 1, "mem": 1.0, "attr": None, "copy": False, "script": None}
    msg.update(changes)
    return msg


def test_first_status_on_a_fresh_home_succeeds(qpy):
    """The very first ``qpy status`` starts the master and the embedded multiuser and
    reports them, rather than failing because the master has not registered yet."""
    proc = qpy.run("status", check=False)
    assert proc.returncode == 0, proc.stderr
    assert qpy.pid("master") and qpy.pid("multiuser")


# -- malformed requests --------------------------------------------------------------------

HUGE = 4 * 1024 * 1024  # well under MAX_MESSAGE: a big but legal frame

COMMON_CASES = {
    "invalid json": (b"{not json", "malformed message"),
    "not utf-8": (b"\xff\xfe\xfd", "malformed message"),
    "empty frame": (b"", "malformed message"),
    "json array": (b'[{"v": 1, "type": "ping"}]', "not a JSON object"),
    "json string": (b'"ping"', "not a JSON object"),
    "json null": (b"null", "not a JSON object"),
    "deeply nested json": (b"[" * 200_000 + b"]" * 200_000, "malformed message"),
    "wrong v": (frame({"v": 2, "type": "status"}), "unsupported protocol version"),
    "string v": (frame({"v": "1", "type": "status"}), "unsupported protocol version"),
    "no v": (frame({"type": "status"}), "unsupported protocol version"),
    "unknown type": (frame({"v": 1, "type": "frobnicate"}), "'frobnicate'"),
    "no type": (frame({"v": 1}), "unknown request type"),
    "non-string type": (frame({"v": 1, "type": ["status"]}), "unknown request type"),
    "extra field": (frame({"v": 1, "type": "status", "extra": 1}), "'extra'"),
    "non-int id": (frame({"v": 1, "type": "status", "id": "7"}), "'id'"),
    "bool id": (frame({"v": 1, "type": "status", "id": True}), "'id'"),
}

MASTER_CASES = {
    **COMMON_CASES,
    "missing field": (frame({"v": 1, "type": "check"}), "missing field 'select'"),
    "string n_cores": (None, "'n_cores'"),
    "bool n_cores": (None, "'n_cores'"),
    "null n_cores": (None, "'n_cores'"),
    "string mem": (None, "'mem'"),
    "bool mem": (None, "'mem'"),
    "non-string env": (None, "'env'"),
    "sub extra field": (None, "'shell'"),
    "sub missing command": (None, "missing field 'command'"),
    "relative cwd": (None, "absolute"),
    "zero cores": (None, "at least 1"),
    "negative mem": (None, "mem"),
    "bad attr": (None, "attr"),
    "huge nested attr": (None, "nested"),
    "huge relative cwd": (None, "absolute"),
    "huge ctrl action": (frame({"v": 1, "type": "ctrl", "action": "x" * HUGE}),
                         "Unknown ctrlQueue type"),
    "huge config key": (frame({"v": 1, "type": "config", "key": "k" * HUGE, "values": []}),
                        "unknown config key"),
    "bad selection": (frame({"v": 1, "type": "check", "select": {"ids": [True]}}),
                      "invalid selection"),
    "multiuser type": (frame({"v": 1, "type": "slots", "release": [], "want": [],
                              "queue_size": 0}), "not served here"),
}


def master_frame(qpy, case: str) -> bytes:
    subs = {
        "string n_cores": {"n_cores": "3"},
        "bool n_cores": {"n_cores": True},
        "null n_cores": {"n_cores": None},
        "string mem": {"mem": "5"},
        "bool mem": {"mem": False},
        "non-string env": {"env": {"A": 1}},
        "sub extra field": {"shell": "/bin/sh"},
        "relative cwd": {"cwd": "work/dir"},
        "zero cores": {"n_cores": 0},
        "negative mem": {"mem": -1.0},
        "bad attr": {"attr": "big and"},
        "huge nested attr": {"attr": "(" * (HUGE // 2) + "a" + ")" * (HUGE // 2)},
        "huge relative cwd": {"cwd": "d" * HUGE},
    }
    if case == "sub missing command":
        msg = good_sub(qpy)
        del msg["command"]
        return frame(msg)
    if case in subs:
        return frame(good_sub(qpy, **subs[case]))
    return MASTER_CASES[case][0]


@pytest.mark.parametrize("case", list(MASTER_CASES))
def test_master_refuses_malformed_request_and_keeps_serving(qpy, case):
    master_pid, multiuser_pid = start_daemons(qpy)
    raw = master_frame(qpy, case)
    expected = MASTER_CASES[case][1]
    with master_connect(qpy) as conn:
        reply = reply_to(conn, raw)
        assert reply["ok"] is False, reply
        assert isinstance(reply["error"], str) and expected in reply["error"], reply["error"][:300]
        assert set(reply) <= {"v", "ok", "error", "code", "re"}
        assert reply["code"] == "bad_request", reply
        assert_master_serves(qpy, conn, master_pid)  # the same connection goes on
    assert qpy.jobs() == []  # nothing was queued by a refused request
    assert_still_running(qpy, master_pid, multiuser_pid)


MULTIUSER_CASES = {
    **COMMON_CASES,
    "missing field": (frame({"v": 1, "type": "admin", "command": "status"}),
                      "missing field 'args'"),
    "string queue_size": (frame({"v": 1, "type": "slots", "release": [], "want": [],
                                 "queue_size": "3"}), "'queue_size'"),
    "bool queue_size": (frame({"v": 1, "type": "slots", "release": [], "want": [],
                               "queue_size": True}), "'queue_size'"),
    "bad release list": (frame({"v": 1, "type": "slots", "release": ["1"], "want": [],
                                "queue_size": 0}), "'release'"),
    "bad want group": (frame({"v": 1, "type": "slots", "release": [],
                              "want": [{"cores": "1", "mem": 1, "attr": None, "jobs": [1]}],
                              "queue_size": 1}), "bad slot request"),
    "huge nested attr in want": (frame({"v": 1, "type": "slots", "release": [], "want": [
        {"cores": 1, "mem": 1.0, "attr": "(" * (HUGE // 2) + "a" + ")" * (HUGE // 2),
         "jobs": [1]}], "queue_size": 1}), "nested"),
    "huge admin command": (frame({"v": 1, "type": "admin", "command": "c" * HUGE,
                                  "args": []}), "admin key"),
    "bad running entry": (frame({"v": 1, "type": "hello", "queue_size": 0,
                                 "running": [{"job": "1"}]}), "bad running job entry"),
    "master type": (frame({"v": 1, "type": "ping"}), "not served here"),
}


@pytest.mark.parametrize("case", list(MULTIUSER_CASES))
def test_multiuser_refuses_malformed_request_and_keeps_serving(qpy, case):
    master_pid, multiuser_pid = start_daemons(qpy)
    raw, expected = MULTIUSER_CASES[case]
    with multiuser_connect(qpy) as conn:
        reply = reply_to(conn, raw)
        assert reply["ok"] is False, reply
        assert isinstance(reply["error"], str) and expected in reply["error"], reply["error"][:300]
        assert_multiuser_serves(conn)
    assert_still_running(qpy, master_pid, multiuser_pid)


@pytest.mark.parametrize("daemon", ["master", "multiuser"])
def test_error_reply_echoes_request_id(qpy, daemon):
    """Every reply to a request with an ``id`` carries it back as ``re``, errors included,
    so a persistent connection can match replies to requests."""
    start_daemons(qpy)
    connect = master_connect if daemon == "master" else multiuser_connect
    with connect(qpy) as conn:
        refused = reply_to(conn, frame({"v": 1, "type": "admin", "command": "finish",
                                        "args": [], "id": 5}))
        assert refused["ok"] is False and refused.get("re") == 5
        unknown = reply_to(conn, frame({"v": 1, "type": "frobnicate", "id": 6}))
        assert unknown["ok"] is False and unknown.get("re") == 6
        missing = reply_to(conn, frame({"v": 1, "type": "check", "id": 7}))
        assert missing["ok"] is False and missing.get("re") == 7


def test_master_accepts_a_good_sub_after_errors(qpy):
    master_pid, multiuser_pid = start_daemons(qpy)
    with master_connect(qpy) as conn:
        assert reply_to(conn, frame(good_sub(qpy, n_cores="1")))["ok"] is False
        assert reply_to(conn, b"{")["ok"] is False
        reply = reply_to(conn, frame(good_sub(qpy, command="echo hello")))
        assert reply["ok"] is True, reply
        job_id = reply["job"]
    assert qpy.wait_status(job_id)["status"] == "done"
    assert [j["id"] for j in qpy.jobs()] == [job_id]
    assert_still_running(qpy, master_pid, multiuser_pid)


# -- oversized frames ----------------------------------------------------------------------


def send_oversized(conn) -> None:
    """Send one frame of MAX_MESSAGE + 1 bytes; the daemon may hang up before it is all sent."""
    try:
        conn.send_bytes(b"x" * (wire.MAX_MESSAGE + 1))
    except OSError:
        pass


def assert_dropped(conn) -> None:
    assert conn.poll(REPLY_WAIT), "the connection was neither answered nor dropped"
    with pytest.raises((EOFError, OSError)):
        conn.recv_bytes(wire.MAX_MESSAGE)


@pytest.mark.parametrize("daemon", ["master", "multiuser"])
def test_oversized_frame_drops_only_that_connection(qpy, daemon):
    master_pid, multiuser_pid = start_daemons(qpy)
    connect = master_connect if daemon == "master" else multiuser_connect
    with connect(qpy) as bystander, connect(qpy) as offender:
        send_oversized(offender)
        assert_dropped(offender)
        # another, already open connection is unaffected
        if daemon == "master":
            assert_master_serves(qpy, bystander, master_pid)
        else:
            assert_multiuser_serves(bystander)
    assert_still_running(qpy, master_pid, multiuser_pid)


# -- slow and many clients -----------------------------------------------------------------


def stallers(address) -> tuple:
    """Two stalling clients: one says nothing at all, one sends its hello and then never
    answers the challenge. Reading that challenge proves a daemon thread is busy with it."""
    silent = Client(address)
    half = Client(address)
    half.send_bytes(json.dumps({"v": 1, "type": "hello", "user": wire.whoami()}).encode())
    assert half.poll(REPLY_WAIT), "the daemon never sent its challenge"
    challenge = half.recv_bytes(256)
    assert challenge.startswith(b"#CHALLENGE#")
    return silent, half


@pytest.mark.parametrize("daemon", ["master", "multiuser"])
def test_stalled_client_blocks_nobody(qpy, daemon):
    master_pid, multiuser_pid = start_daemons(qpy)
    address = master_address(qpy) if daemon == "master" else multiuser_address(qpy)
    silent, half = stallers(address)
    try:
        # while both stallers are connected and unauthenticated, another client is served
        if daemon == "master":
            with master_connect(qpy) as conn:
                assert_master_serves(qpy, conn, master_pid)
        else:
            with multiuser_connect(qpy) as conn:
                assert_multiuser_serves(conn)
        # ... and that happened before the daemon gave up on the stallers: both are still
        # connected (their handshake timeout has not yet run out)
        assert not silent.poll(0) and not half.poll(0)
        assert qpy.run("status").returncode == 0
        # the stallers are dropped once the handshake times out (bounded wait)
        for staller in (silent, half):
            assert staller.poll(2 * wire.HANDSHAKE_TIMEOUT + REPLY_WAIT), "staller never dropped"
            with pytest.raises((EOFError, OSError)):
                staller.recv_bytes(wire.MAX_MESSAGE)
    finally:
        silent.close()
        half.close()
    assert_still_running(qpy, master_pid, multiuser_pid)


@pytest.mark.parametrize("daemon", ["master", "multiuser"])
def test_many_concurrent_clients_all_served(qpy, daemon):
    """As many sessions at once as one user may hold (the multiuser caps them per user,
    its master's link among them) are all served."""
    master_pid, multiuser_pid = start_daemons(qpy)
    n = 50 if daemon == "master" else mu_main.LIMITS.per_user - 1
    all_connected = threading.Barrier(n, timeout=REPLY_WAIT)

    def one_client(i: int) -> dict:
        connect = master_connect if daemon == "master" else multiuser_connect
        with connect(qpy) as conn:
            all_connected.wait()  # every client holds an open session at the same time
            msg = {"type": "ping" if daemon == "master" else "status", "id": 1000 + i}
            return wire.call(conn, msg, REPLY_WAIT)

    with ThreadPoolExecutor(max_workers=n) as pool:
        replies = list(pool.map(one_client, range(n)))
    assert len(replies) == n
    assert all(r["ok"] is True for r in replies)
    assert [r["re"] for r in replies] == [1000 + i for i in range(n)]
    if daemon == "master":
        assert {r["pid"] for r in replies} == {master_pid}
    assert_still_running(qpy, master_pid, multiuser_pid)


def test_sessions_beyond_the_per_user_limit_are_refused(qpy):
    """One more session than a user may hold gets an error naming the limit; the others,
    and the user's master, go on being served."""
    master_pid, multiuser_pid = start_daemons(qpy)
    held = [multiuser_connect(qpy) for _ in range(mu_main.LIMITS.per_user - 1)]
    try:
        for conn in held:
            assert wire.call(conn, {"type": "status"}, REPLY_WAIT)["ok"] is True
        with multiuser_connect(qpy) as extra:
            assert extra.poll(REPLY_WAIT)
            reply = wire.decode(extra.recv_bytes(wire.MAX_MESSAGE))
        assert reply["ok"] is False and "too many connections" in reply["error"], reply
        assert qpy.run("status").returncode == 0
    finally:
        for conn in held:
            conn.close()
    assert_still_running(qpy, master_pid, multiuser_pid)


def test_master_never_exits_during_abuse(qpy):
    """A mix of everything above on one daemon, then the same PIDs still serve."""
    master_pid, multiuser_pid = start_daemons(qpy)
    with master_connect(qpy) as conn:
        for raw in (b"{", b"[]", frame({"v": 9, "type": "ping"}),
                    frame({"v": 1, "type": "nope"}), frame(good_sub(qpy, cwd="."))):
            assert reply_to(conn, raw)["ok"] is False
    with master_connect(qpy) as conn:
        send_oversized(conn)
        assert_dropped(conn)
    with multiuser_connect(qpy) as conn:
        send_oversized(conn)
        assert_dropped(conn)
    assert qpy.sub("true") > 0
    assert_still_running(qpy, master_pid, multiuser_pid)


# -- reply schemas and error codes -----------------------------------------------------------


def test_every_request_type_has_a_reply_schema():
    assert set(wire.REPLIES) == set(wire.SCHEMAS)
    for schema in (*wire.REPLIES.values(), *wire.RECORDS.values()):
        for spec in schema.values():
            assert spec.strip("?=[]") in {"int", "float", "str", "bool", "dict", "list",
                                          "any", "{str}", *wire.RECORDS}, spec


def test_reply_problem_names_what_strays_from_the_schema():
    good = {"ok": True, "text": "Job 3 received.\n", "job": 3, "re": 1}
    assert wire.reply_problem("sub", good) is None
    assert "missing field 'job'" in wire.reply_problem("sub", {"ok": True})
    assert "unknown field 'extra'" in wire.reply_problem("sub", {**good, "extra": 1})
    assert "'job' of sub reply must be int" in wire.reply_problem("sub", {**good, "job": "3"})
    bad_job = {"ok": True, "jobs": [{"id": 1}], "fmt": "", "colour": True, "scheme": [],
               "paused": False}
    assert "'jobs' of check reply must be [job]" in wire.reply_problem("check", bad_job)
    error = wire.error_reply("Nothing to do.", 4, "not_found")
    assert error == {"ok": False, "error": "Nothing to do.", "code": "not_found", "re": 4}
    assert wire.reply_problem("kill", error) is None
    assert "unknown error code" in wire.reply_problem("kill", {**error, "code": "oops"})


def test_daemons_check_their_replies_in_the_tests():
    """conftest sets QPY_CHECK_REPLIES, so a reply that strays from wire.REPLIES fails the
    test that caused it instead of passing unseen."""
    import os

    assert os.environ.get("QPY_CHECK_REPLIES") == "1"


def test_each_reply_of_a_real_master_fits_its_schema(qpy):
    """One of each request, on one connection: the replies (and the errors) fit."""
    start_daemons(qpy)
    job = qpy.sub("true")
    qpy.wait_status(job, "done")
    conn = master_connect(qpy)
    try:
        requests = [
            {"type": "ping"}, {"type": "check", "select": {}}, {"type": "status"},
            {"type": "config", "key": None, "values": []},
            {"type": "notes", "job": None, "text": None},
            {"type": "kill", "select": {"ids": [999]}},
            {"type": "clean", "select": {"ids": [job]}},
            {"type": "ctrl", "action": "pause"}, {"type": "ctrl", "action": "continue"},
        ]
        for request in requests:
            reply = wire.call(conn, request, REPLY_WAIT)
            assert wire.reply_problem(request["type"], reply) is None, (request, reply)
            assert reply.get("code") != "internal", reply
    finally:
        conn.close()


@pytest.mark.parametrize("args,status", [
    (("kill", "999"), 3),  # nothing matched
    (("clean", "12345"), 3),
    (("notes", "777"), 3),
    (("sub", "-n", "zero", "true"), 2),  # bad input
    (("check", "1-x"), 2),
    (("config", "killGrace", "-1"), 2),
    (("ctrlQueue", "jump", "1", "begin"), 1),  # refused: the queue is not paused
])
def test_exit_status_tells_the_kind_of_failure(qpy, args, status):
    proc = qpy.run(*args, check=False)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.startswith("qpy: ") and proc.stderr.count("\n") == 1


def test_an_unreachable_multiuser_exits_4(qpy):
    """A configured user whose multiuser does not answer: 'qpy status' says so, exit 4."""
    import socket

    qpy.home.mkdir(mode=0o700)
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for name, value in (("multiuser_connection_address", "127.0.0.1"),
                            ("multiuser_connection_port", str(port)),
                            ("multiuser_connection_conn_key", paths.new_key())):
            paths.write_private(qpy.home / name, value + "\n")
        proc = qpy.run("status", check=False)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith(
        f"qpy: the cluster's multiuser at 127.0.0.1:{port} is not reachable"), proc.stderr
