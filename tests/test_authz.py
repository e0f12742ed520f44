"""Authorization with real Unix users, for every request type of each daemon.

The request types come from the daemons' own handler tables (the master's
``handlers.make_table``, the multiuser's ``handlers.make_table`` and ``admin_ops.OPS``); each
has a forged request below that would change or reveal alice's state if it were served,
and a test fails as soon as a type is added without one. Every forged request is tried

- at alice's master: by bob's own process, claiming alice with bob's key, over alice's
  socket (opened to him for the test, so the master itself must refuse him), and by
  alice's own process with a wrong key or claiming bob;
- at the multiuser: with bob's key claiming alice, with a wrong key claiming alice, and
  with bob's key claiming the admin; and over bob's own authenticated connection,
  naming alice in the request or asking for an admin command.

Each attempt is refused, the daemon's log names each refusal, and nothing changes: alice's
jobs, notes, settings and allocations, the allowed users and keys, the daemons' PIDs.
Also: a pickled hello is never unpickled by either daemon (the pickled *request* after
the handshake is covered by test_security.py).

Needs root, like test_multiuser.py (skipped without it unless CI is set).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, Jobs, skip_module_unless_available, started_cluster

from qpy import paths, wire
from qpy_master import handlers
from qpy_multiuser import admin_ops
from qpy_multiuser import handlers as mu_handlers
from qpy_multiuser.state import ADMIN

skip_module_unless_available()

MASTER_TYPES = sorted(handlers.make_table(None, lambda: None))
MULTIUSER_TYPES = sorted(mu_handlers.make_table(None))
ADMIN_COMMANDS = sorted(admin_ops.OPS)
MARKER = "forged_marker"


# -- the forged requests: one per request type -------------------------------------------------


def forged_master_requests(alice: Alice) -> dict[str, dict]:
    """What each master request would do to alice if it were served for someone else."""
    return {
        "sub": {"type": "sub", "command": f"touch {MARKER}", "cwd": str(alice.jobs.dir),
                "env": {}, "n_cores": 1, "mem": 1.0, "attr": None, "copy": False,
                "script": None},
        "check": {"type": "check", "select": {"all": True}},
        "kill": {"type": "kill", "select": {"all": True}},
        "clean": {"type": "clean", "select": {"all": True}},
        "config": {"type": "config", "key": "killGrace", "values": ["99"]},
        "ctrl": {"type": "ctrl", "action": "pause"},
        "notes": {"type": "notes", "job": alice.done, "text": "forged note"},
        "status": {"type": "status"},
        "finish": {"type": "finish"},
        "ping": {"type": "ping"},
        "wait": {"type": "wait", "select": {"all": True}, "timeout": 0.0},
        "history": {"type": "history", "select": {}},
        "requeue": {"type": "requeue", "select": {"all": True}},
        # the command server: would run 'qpy kill all' as alice
        "cli": {"type": "cli", "argv": ["kill", "all"], "cwd": str(alice.jobs.dir), "env": {},
                "tty": False},
        # the queue's semantics (issue 13)
        "bulk": {"type": "bulk", "cwd": str(alice.jobs.dir), "env": {}, "jobs": [
            {"command": f"touch {MARKER}", "n_cores": 1, "mem": 1.0, "attr": None,
             "copy": False, "script": None}]},
        "hold": {"type": "hold", "select": {"all": True}, "held": True},
        "why": {"type": "why", "job": alice.running},
        # qpy connect: would list alice's sessions, make one in her name, wait on one
        "sessions": {"type": "sessions"},
        "connect": {"type": "connect", "cwd": str(alice.jobs.dir), "env": {}, "n_cores": 1,
                    "mem": 1.0, "attr": None, "name": None, "gui": None},
        "session_wait": {"type": "session_wait", "job": alice.running, "until": "end",
                         "timeout": 0.0},
    }


def forged_admin_args(cluster: Cluster, alice: Alice) -> dict[str, list[str]]:
    """Arguments with which each admin command would act on alice or on the cluster."""
    name = cluster.name("alice")
    return {
        "finish": [], "nodes": [], "distribute": [], "status": [], "variables": [],
        "saveMessages": ["true"], "adduser": ["mallory"], "enrol": ["mallory", "3600"],
        "removeuser": [name],
        # would take the nodes alice's jobs run on out of the pool, or put them back
        "drain": [MARKER, "n1", "n2", "n3"], "resume": ["n1", "n2", "n3"],
        "__user": [name], "__req_core": [name, "777", "1", "1"],
        "__remove_job": [name, str(alice.running)],
    }


def forged_multiuser_requests(cluster: Cluster, alice: Alice) -> dict[str, dict]:
    """Each multiuser request type, plus one ``admin`` request per admin command."""
    requests = {
        # would replace alice's master and drop her allocations
        "hello": {"type": "hello", "running": [], "queue_size": 0},
        # would release alice's running job and take a slot in her name
        "slots": {"type": "slots", "release": [alice.running],
                  "want": [{"cores": 1, "mem": 1.0, "attr": None, "jobs": [778]}],
                  "queue_size": 1},
        "status": {"type": "status"},
        # would tell what alice's share and usage are, as alice sees them
        "explain": {"type": "explain", "cores": 1, "mem": 1.0, "attr": None},
        # would report alice's running job as an idle session (for the idle policy)
        "idle_report": {"type": "idle_report", "sessions": [
            {"job": alice.running, "node": "n1", "idle": 1e6, "attached": 0}]},
        "admin": {"type": "admin", "command": "variables", "args": []},
        # would hand out a bundle, as to a new user's enrolment code
        "join": {"type": "join"},
    }
    for command, args in forged_admin_args(cluster, alice).items():
        requests[f"admin {command}"] = {"type": "admin", "command": command, "args": args}
    return requests


def test_every_request_type_has_a_forged_request():
    """A new request type or admin command fails here until it has a forged request
    (and so is tried by every test below). Each forged request is valid on the wire, so
    only the identity can refuse it."""

    class Stub:
        done, running = 1, 2
        jobs = type("J", (), {"dir": Path("/nonexistent")})()

    class StubCluster:
        def name(self, user):
            return f"qpytest_{user}"

    master = forged_master_requests(Stub())
    assert sorted(master) == MASTER_TYPES
    assert sorted(forged_admin_args(StubCluster(), Stub())) == ADMIN_COMMANDS
    multiuser = forged_multiuser_requests(StubCluster(), Stub())
    assert {m["type"] for m in multiuser.values()} == set(MULTIUSER_TYPES)
    # every request type of the schema is served by one of the two daemons
    assert set(wire.SCHEMAS) == set(MASTER_TYPES) | set(MULTIUSER_TYPES)
    for msg in (*master.values(), *multiuser.values()):
        wire.validate({"v": wire.PROTOCOL, **msg})


# -- fixtures ----------------------------------------------------------------------------------


class Alice:
    """Alice's state the forgeries go after: a finished job with a note, a running job
    (allocated by the multiuser), her settings."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.jobs = Jobs(cluster, "alice", cluster.workdir("alice", "authz"))
        self.done = self.jobs.sub()
        self.jobs.release(self.done)
        self.jobs.wait_finished(self.done)
        self.running = self.jobs.sub()
        self.jobs.wait_started(self.running)
        cluster.qpy_as("alice", "notes", str(self.done), "alice's own note")

    def master_state(self) -> dict:
        cluster = self.cluster
        return {
            "jobs": cluster.jobs("alice"),
            "config": cluster.qpy_as("alice", "config").stdout,
            "notes": cluster.qpy_as("alice", "notes", str(self.done)).stdout,
            "master": cluster.master_pid("alice"),
            "marker": (self.jobs.dir / MARKER).exists(),
        }


def multiuser_state(cluster: Cluster) -> dict:
    home = cluster.admin_home
    return {
        "variables": cluster.variables(),
        "allowed": (home / "allowed_users").read_text(),
        "keys": sorted(os.listdir(home / "keys")),
        "multiuser": cluster.multiuser_pid(),
        "masters": {u: cluster.master_pid(u) for u in ("alice", "bob", "carol")},
    }


@pytest.fixture(scope="module")
def cluster():
    with started_cluster() as c:
        c.reset()
        yield c


@pytest.fixture(scope="module")
def alice(cluster):
    a = Alice(cluster)
    yield a
    a.jobs.release_all()
    a.jobs.wait_finished(a.running)


@pytest.fixture
def unchanged(cluster, alice):
    """Asserts at the end of the test that alice's and the multiuser's state did not
    change (and that alice's running job still runs)."""
    before = alice.master_state(), multiuser_state(cluster)
    yield
    after = alice.master_state(), multiuser_state(cluster)
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert alice.jobs.status(alice.running) == "running"


# -- the daemons' logs -------------------------------------------------------------------------


class Log:
    """The lines a daemon's log gains from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size

    def lines(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace").splitlines()

    def expect(self, pattern: str, count: int) -> list[str]:
        """Wait (a hang guard) until ``count`` new lines match, then check there are
        exactly that many: one per refusal."""
        regex = re.compile(pattern)

        def matching():
            return [line for line in self.lines() if regex.search(line)]

        wait_for(lambda: len(matching()) >= count, WAIT,
                 f"{count} log lines matching {pattern!r} in {self.path}")
        found = matching()
        assert len(found) == count, found
        return found


def master_log(cluster: Cluster, user: str) -> Log:
    return Log(cluster.qpy_home(user) / "master.log")


def multiuser_log(cluster: Cluster) -> Log:
    return Log(cluster.admin_home / "multiuser.log")


# -- connecting as another account -------------------------------------------------------------

# Run as a test account with a JSON spec on stdin: one connection per attempt, claiming a
# user with a key; a refused handshake is reported, a served one is sent its request.
PROBE = r"""
import json, sys
from multiprocessing.connection import AuthenticationError
from qpy import wire
spec = json.load(sys.stdin)
address = spec["address"]
results = []
for attempt in spec["attempts"]:
    try:
        conn = wire.connect(address, attempt["claim"], attempt["key"].encode())
    except (AuthenticationError, EOFError, OSError) as exc:
        results.append({"refused": type(exc).__name__})
        continue
    try:
        reply = wire.call(conn, attempt["msg"], 30)
    except Exception as exc:
        reply = {"exception": repr(exc)}
    finally:
        conn.close()
    results.append({"served": reply})
print(json.dumps(results))
"""

REFUSED = ("AuthenticationError", "EOFError", "ConnectionResetError", "BrokenPipeError")


def probe(cluster: Cluster, user: str, address: str, attempts: list[dict]) -> list[dict]:
    proc = cluster.run_as(user, [str(cluster.bin / "python"), "-c", PROBE],
                          input=json.dumps({"address": address, "attempts": attempts}))
    return json.loads(proc.stdout)


def assert_all_refused(attempts: list[dict], results: list[dict]) -> None:
    assert len(results) == len(attempts)
    served = [(a["claim"], a["msg"]["type"], r) for a, r in zip(attempts, results, strict=True)
              if "served" in r]
    assert not served, f"forged requests were served: {served}"
    assert all(r["refused"] in REFUSED for r in results), results


def wrong_key() -> str:
    return paths.new_key()


class Opened:
    """Alice's home, ``~/.qpy`` and master socket opened to other accounts for the test,
    so that bob reaches the master itself (file modes are the first wall; this tests the
    second). The modes are restored afterwards."""

    def __init__(self, cluster: Cluster) -> None:
        home = cluster.account("alice").home
        qpy = cluster.qpy_home("alice")
        self.paths = {home: 0o711, qpy: 0o711, qpy / "master.sock": 0o666}
        self.modes: dict[Path, int] = {}

    def __enter__(self) -> Opened:
        for path, mode in self.paths.items():
            self.modes[path] = stat.S_IMODE(path.stat().st_mode)
            os.chmod(path, self.modes[path] | mode)
        return self

    def __exit__(self, *exc_info) -> None:
        for path, mode in self.modes.items():
            os.chmod(path, mode)


# -- the master ----------------------------------------------------------------------------------


def test_bob_cannot_use_alices_master_even_when_he_reaches_its_socket(cluster, alice,
                                                                      unchanged):
    """Bob's process, claiming alice with his own key or claiming himself: the master
    refuses the connection by its Unix uid before any key exchange, for every request."""
    forged = forged_master_requests(alice)
    bob_key = paths.read_key(cluster.qpy_home("bob") / "master.key").decode()
    attempts = [{"claim": claim, "key": bob_key, "msg": msg}
                for claim in (cluster.name("alice"), cluster.name("bob"))
                for msg in forged.values()]
    log = master_log(cluster, "alice")
    with Opened(cluster):
        results = probe(cluster, "bob", str(cluster.qpy_home("alice") / "master.sock"),
                        attempts)
    assert_all_refused(attempts, results)
    log.expect(rf"WARNING .*refused a connection from uid {cluster.account('bob').uid}\b",
               len(attempts))


def test_alices_master_refuses_a_wrong_key_and_other_names(cluster, alice, unchanged):
    """Alice's own process (so the uid check passes), with a wrong key, or claiming bob
    with bob's key: refused by the key exchange for every request, each one logged."""
    forged = forged_master_requests(alice)
    alice_name, bob_name = cluster.name("alice"), cluster.name("bob")
    bob_key = paths.read_key(cluster.qpy_home("bob") / "master.key").decode()
    identities = [(alice_name, wrong_key()), (bob_name, bob_key), (alice_name, bob_key)]
    attempts = [{"claim": claim, "key": key, "msg": msg}
                for claim, key in identities for msg in forged.values()]
    log = master_log(cluster, "alice")
    results = probe(cluster, "alice", str(cluster.qpy_home("alice") / "master.sock"),
                    attempts)
    assert_all_refused(attempts, results)
    log.expect(rf"WARNING .*authentication failed for '{alice_name}'", 2 * len(forged))
    log.expect(rf"WARNING .*authentication failed for '{bob_name}'", len(forged))


# -- the multiuser -------------------------------------------------------------------------------


def multiuser_attempt(cluster: Cluster, claim: str, key: bytes, msg: dict) -> dict:
    """One forged connection from this (root) process; what happened to it."""
    try:
        conn = cluster.connect(claim, key)
    except Exception as exc:  # what it was is checked against REFUSED
        return {"refused": type(exc).__name__}
    with conn:
        return {"served": wire.call(conn, msg, WAIT)}


@pytest.mark.parametrize("identity", ["bob's key claiming alice", "a wrong key claiming alice",
                                      "bob's key claiming the admin"])
def test_multiuser_refuses_forged_identities_for_every_request(cluster, alice, unchanged,
                                                                identity):
    claim = {"bob's key claiming alice": cluster.name("alice"),
             "a wrong key claiming alice": cluster.name("alice"),
             "bob's key claiming the admin": ADMIN}[identity]
    key = wrong_key().encode() if "wrong" in identity else cluster.user_key("bob")
    forged = forged_multiuser_requests(cluster, alice)
    log = multiuser_log(cluster)
    attempts = [{"claim": claim, "msg": msg} for msg in forged.values()]
    results = [multiuser_attempt(cluster, claim, key, msg) for msg in forged.values()]
    assert_all_refused(attempts, results)
    log.expect(rf"WARNING .*authentication failed for '{re.escape(claim)}'", len(forged))


def test_bobs_own_connection_cannot_name_alice_or_run_admin_commands(cluster, alice,
                                                                    unchanged):
    """Authenticated as himself, bob sends every request type with a field naming alice
    (refused by the schema: a connection acts only for the user its key proved), and
    every admin command (refused: they need the admin key). Each refusal is logged with
    bob's name."""
    bob = cluster.name("bob")
    forged = forged_multiuser_requests(cluster, alice)
    log = multiuser_log(cluster)
    with cluster.connect(bob, cluster.user_key("bob")) as conn:
        for msg in forged.values():
            if msg["type"] == "admin":
                continue
            reply = wire.call(conn, {**msg, "user": cluster.name("alice")}, WAIT)
            assert reply["ok"] is False and "'user'" in reply["error"], (msg, reply)
        admin = [m for m in forged.values() if m["type"] == "admin"]
        for msg in admin:
            reply = wire.call(conn, msg, WAIT)
            assert reply["ok"] is False and "admin key" in reply["error"], (msg, reply)
    named = [m["type"] for m in forged.values() if m["type"] != "admin"]
    for kind in set(named):
        log.expect(rf"refused {kind} from {bob}: unknown field 'user'", named.count(kind))
    for msg in admin:
        log.expect(rf"WARNING .*user {bob} tried admin command {re.escape(msg['command'])}$",
                   sum(m["command"] == msg["command"] for m in admin))
    log.expect(rf"refused admin from {bob}: admin commands need the admin key", len(admin))


# -- pickle ------------------------------------------------------------------------------------

# Run as alice: send a pickled hello and report whether the daemon dropped the connection.
PICKLE_PROBE = r"""
import base64, json, sys
from multiprocessing.connection import Client
spec = json.load(sys.stdin)
address = spec["address"] if isinstance(spec["address"], str) else tuple(spec["address"])
conn = Client(address)
conn.send_bytes(base64.b64decode(spec["payload"]))
if not conn.poll(60):
    print("no answer")
else:
    try:
        print("answered", conn.recv_bytes(4096)[:40])
    except (EOFError, OSError):
        print("dropped")
"""


class _Marker:
    """Unpickling this creates ``path``: proof that someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def shared_dir():
    """A directory every account may create files in."""
    path = Path(tempfile.mkdtemp(prefix="qpy-authz-", dir="/tmp"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pickled_hello_is_dropped_and_never_unpickled(cluster, alice, unchanged, shared_dir):
    """The handshake's first frame, pickled as ``Connection.send`` would, carrying an
    object whose unpickling creates a file: both daemons drop the connection, log a bad
    hello, and the file never appears."""
    # the payload is real: unpickled by an account's process, it creates its file
    control = shared_dir / "control"
    payload = base64.b64encode(pickle.dumps(_Marker(str(control)))).decode()
    cluster.run_as("alice", [str(cluster.bin / "python"), "-c",
                             f"import base64, pickle; pickle.loads(base64.b64decode('{payload}'))"])
    assert control.exists()
    targets = {
        "master": (str(cluster.qpy_home("alice") / "master.sock"), master_log(cluster, "alice")),
        "multiuser": (list(cluster.multiuser_address()), multiuser_log(cluster)),
    }
    for name, (address, log) in targets.items():
        marker = shared_dir / f"unpickled_by_{name}"
        payload = pickle.dumps({"v": 1, "type": "hello", "user": cluster.name("alice"),
                                "x": _Marker(str(marker))})
        spec = {"address": address, "payload": base64.b64encode(payload).decode()}
        proc = cluster.run_as("alice", [str(cluster.bin / "python"), "-c", PICKLE_PROBE],
                              input=json.dumps(spec))
        assert proc.stdout == "dropped\n", (name, proc.stdout)
        log.expect(r"WARNING .*bad hello: malformed message", 1)
        assert not marker.exists(), name
