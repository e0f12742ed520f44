"""Harness for the multi-user tests (not collected: no ``test_`` prefix).

A real shared installation on this machine: one venv every account can run, real Unix
accounts (three users and a qpy admin account), a real multiuser started by the admin
with ``qpy-admin start``, and one master per user, started by that user's first ``qpy``
command. Every command runs as its account through ``runuser`` with a clean environment.
The nodes of the ``nodes`` file all have ``address=localhost``: their jobs run on this
machine, and since they only wait for files, the machine's real cores do not matter.

Jobs are *gated*: each records its node, creates ``started_<ID>`` and waits until
``go`` or ``go_<ID>`` exists in its directory, then exits with ``10 + ID % 100``. Tests
therefore hold and release jobs by creating files, never with sleeps, and every wait has
a limit that only guards against a hang.

Needs root (to create accounts and switch to them). Everything created is removed at the
end: the processes of the test accounts are killed, the accounts deleted with their homes,
and the venv removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import json_payload, pid_alive, wait_for

from qpy import paths, wire
from qpy.selection import FINISHED

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bash_completion.sh", "qpy", "qpy_master",
           "qpy_multiuser", "manual", "systemd", "scripts")
TOOLS = ("useradd", "userdel", "runuser", "install")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_PYTHON = "/usr/bin/python3"
WAIT = 60.0  # only a guard against a hang
COMMAND_TIMEOUT = 120.0
USERS = ("alice", "bob", "carol")

NODES = """\
# three nodes on this machine, with the cores and memory the tests reason about
n1 address=localhost cores=2 memory=8
n2 address=localhost cores=4 memory=16 attributes=big
n3 address=localhost cores=2 memory=4 pref_multicore=true
"""
TOTAL_CORES = 8
RULES = "even\n"

# The gated job: node first, then the started mark, so a started job's node is known.
GATED = ('echo "$QPY_NODE" > node_$QPY_JOB_ID; touch started_$QPY_JOB_ID; '
         'while [ ! -e go ] && [ ! -e go_$QPY_JOB_ID ]; do sleep 0.1; done; '
         'exit $((10 + QPY_JOB_ID % 100))')


# Run as a test account (``Cluster.wire_as``): the first stdin line is a JSON spec with
# the multiuser's address and steps. Each step prints one JSON line:
#   {"connect": {"claim": NAME, "key": HEX}}  both optional: the account's own bundle
#   {"send": FRAME}      one frame on the current connection, then its reply (events skipped)
#   {"raw": FRAME}       as send, but the frame is sent as it is (no "v" added)
#   {"read": SECONDS}    the next frame, if any comes; or how the connection ended
#   {"wait": TEXT}       print {"waiting": TEXT}, then wait for a line on stdin
#   {"close": true}
# Frames are JSON as Python writes it, so NaN and Infinity can be sent.
WIRE_PROBE = r"""
import json, os, sys
from qpy import paths, wire
spec = json.loads(sys.stdin.readline())
address = tuple(spec["address"])
home = os.path.expanduser("~/.qpy")
conn = None
def out(result):
    print(json.dumps(result), flush=True)
for step in spec["steps"]:
    if "connect" in step:
        how = step["connect"] or {}
        claim = how.get("claim") or wire.whoami()
        key = how["key"].encode() if how.get("key") else paths.read_key(
            os.path.join(home, "multiuser_connection_conn_key"))
        try:
            conn = wire.connect(address, claim, key)
            out({"connected": True})
        except Exception as exc:
            out({"refused": type(exc).__name__})
    elif "send" in step or "raw" in step:
        frame = step.get("raw") or {"v": wire.PROTOCOL, **step["send"]}
        try:
            conn.send_bytes(json.dumps(frame).encode())
            while True:
                if not conn.poll(60):
                    out({"timeout": True})
                    break
                reply = json.loads(conn.recv_bytes(wire.MAX_MESSAGE))
                if "re" in reply or reply.get("type") not in wire.EVENTS:
                    out({"reply": reply})
                    break
        except Exception as exc:
            out({"closed": type(exc).__name__})
    elif "read" in step:
        try:
            if conn.poll(step["read"]):
                out({"frame": json.loads(conn.recv_bytes(wire.MAX_MESSAGE))})
            else:
                out({"timeout": True})
        except Exception as exc:
            out({"closed": type(exc).__name__})
    elif "wait" in step:
        out({"waiting": step["wait"]})
        sys.stdin.readline()
    elif "close" in step and conn is not None:
        conn.close()
        out({"closed": "by us"})
"""


# Run as a test account (``Cluster.probe_process``): many connections to the multiuser
# at once from the account's own process. The spec: "count" connections of "mode"
#   auth      authenticated with the account's own key, then silent
#   silent    a TCP connection that sends nothing
#   trickle   a hello padded to almost HELLO_MAX, one byte per "interval" seconds
# It prints {"opened": N, "refused": M} once all are open (a connection the multiuser
# ended or answered with an error at once counts as refused), then {"alive": N} after
# each round of trickling, and {"alive": 0} when the multiuser has ended them all; a
# line on stdin ends it.
HOLD_PROBE = r"""
import json, os, select, socket, sys, time
from qpy import paths, wire
spec = json.loads(sys.stdin.readline())
address = tuple(spec["address"])
mode, count = spec["mode"], spec["count"]
def out(result):
    print(json.dumps(result), flush=True)
def ended(sock):
    try:
        return not sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
socks, refused = [], 0
key = paths.read_key(os.path.expanduser("~/.qpy/multiuser_connection_conn_key")) \
    if mode == "auth" else None
for _ in range(count):
    try:
        if mode == "auth":
            conn = wire.connect(address, wire.whoami(), key)
            socks.append(socket.socket(fileno=os.dup(conn.fileno())))
            conn.close()
        else:
            socks.append(socket.create_connection(address, timeout=10))
    except Exception:
        refused += 1
time.sleep(1)
readable = select.select(socks, [], [], 0)[0] if socks else []
gone = [s for s in readable if mode == "auth" or ended(s)]
out({"opened": len(socks) - len(gone), "refused": refused + len(gone)})
live = [s for s in socks if s not in gone]
if mode == "trickle":
    hello = json.dumps({"v": 1, "type": "hello", "user": "x" * 4000}).encode()
    frame = len(hello).to_bytes(4, "big") + hello
    sent = 0
    while live and sent < len(frame):
        for s in list(live):
            try:
                s.send(frame[sent:sent + 1])
            except OSError:
                live.remove(s)
        sent += 1
        ready = select.select([sys.stdin] + live, [], [], spec["interval"])[0]
        if sys.stdin in ready:
            break
        live = [s for s in live if s not in ready or not ended(s)]
        out({"alive": len(live)})
    if not live:
        out({"alive": 0})
sys.stdin.readline()
"""


def expected_exit(job: int) -> int:
    return 10 + job % 100


def unavailable() -> str | None:
    """Why the multi-user tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the multi-user tests need root: they create Unix accounts and run qpy as them"
    for tool in TOOLS:
        if shutil.which(tool, path=SBIN_PATH) is None:
            return f"the multi-user tests need {tool!r} (Debian packages passwd, util-linux)"
    return None


def require() -> None:
    """pytest.skip when the multi-user tests cannot run here; but fail when ``CI`` is
    set, so CI never skips them silently."""
    import pytest

    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def started_cluster(**kwargs) -> Iterator[Cluster]:
    """A set-up cluster (``Cluster(**kwargs)``) for a fixture to yield, torn down after;
    skipped (or failed under CI) where it cannot run."""
    require()
    cluster = Cluster(**kwargs)
    try:
        cluster.set_up()
        yield cluster
    finally:
        cluster.tear_down()


@contextlib.contextmanager
def remote_cluster(n: int, nodes: str, interval: str = "0.5",
                   **kwargs) -> Iterator[tuple[Cluster, object]]:
    """(cluster, ssh nodes): a set-up cluster (``Cluster(**kwargs)``) whose nodes are ``n``
    network-namespace nodes (tests/netns_nodes.py) that alice and the admin reach over
    ssh, with ``nodes`` as the admin's nodes file and monitoring every ``interval``
    seconds; torn down after. Skipped (or failed under CI) where it cannot run."""
    import netns_nodes

    netns_nodes.require()
    with started_cluster(**kwargs) as qpy, netns_nodes.Cluster(
            n, user=qpy.name("alice"), home_config=True) as ssh_nodes:
        ssh_nodes.authorize(qpy.name("admin"), home_config=True)
        qpy.write_admin_file("nodes", nodes)
        qpy.write_admin_file("node_check_interval", interval + "\n")
        qpy.admin("finish")
        wait_for(lambda: not qpy.multiuser_pid(), WAIT, "the multiuser to stop")
        qpy.start_multiuser()
        yield qpy, ssh_nodes


def nodes_up(cluster: Cluster, user: str = "alice") -> None:
    """Wait until every node is up as ``user``'s ``qpy status`` shows them."""
    wait_for(lambda: all(n["state"] == "up" for n in cluster.status_json(user)["nodes"]),
             WAIT, "every node to be up")


def end_all(cluster: Cluster, user: str = "alice") -> None:
    """Kill all of ``user``'s jobs and wait until none is queued or running."""
    cluster.qpy_as(user, "kill", "all", check=False)
    wait_for(lambda: not [j for j in cluster.jobs(user) if j["status"] in ("queue", "running")],
             WAIT, f"{user}'s jobs to end")


def _tool(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    assert found, f"{name} is missing"
    return found


def root_env() -> dict[str, str]:
    """What root's own helper commands get: nothing of this process's environment
    (PYTHONPATH, VIRTUAL_ENV, ...) except pip's configuration."""
    env = {"PATH": SBIN_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    return env


def run_root(*argv: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=root_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# -- the shared venv ---------------------------------------------------------------------


def base_python() -> str:
    """The interpreter for the shared venv: Debian's, which every account can run, unless
    it is missing or too old; then the one running the tests."""
    if os.access(DEBIAN_PYTHON, os.X_OK):
        probe = "import sys, venv; sys.exit(sys.version_info < (3, 11))"
        proc = run_root(DEBIAN_PYTHON, "-c", probe, check=False)
        if proc.returncode == 0:
            return DEBIAN_PYTHON
    return getattr(sys, "_base_executable", None) or sys.executable


def build_venv() -> Path:
    """A venv every account can run, with this checkout installed non-editable.

    Root's home is private, so the project's own venv may be unreadable for the test
    accounts: this one lives in a fresh world-readable directory under /var/tmp. The
    sources are copied first, so the build never writes into the checkout.
    """
    root = Path(tempfile.mkdtemp(prefix="qpy-multiuser-", dir="/var/tmp"))
    try:
        _build_venv(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def _build_venv(root: Path) -> None:
    os.chmod(root, 0o755)
    python = base_python()
    venv = root / "venv"
    run_root(python, "-m", "venv", str(venv))
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    pip = str(venv / "bin" / "pip")
    run_root(pip, "install", "-q", "click", "psutil", "termcolor")
    run_root(pip, "install", "-q", "--no-deps", str(src))
    run_root("chmod", "-R", "a+rX", str(root))


# -- accounts --------------------------------------------------------------------------------


class Account:
    """One Unix account created for the tests."""

    def __init__(self, role: str, tag: str) -> None:
        self.role = role
        self.name = f"qpytest_{role}_{tag}"
        self.created = False
        self._uid: int | None = None

    @property
    def home(self) -> Path:
        return Path(pwd.getpwnam(self.name).pw_dir)

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.name).pw_gid

    def create(self) -> None:
        run_root(_tool("useradd"), "-m", "-s", "/bin/bash", "-c", "qpy multi-user test",
                 self.name)
        self.created = True
        self._uid = self.uid

    def processes(self) -> list[int]:
        """Live processes whose real or effective uid is this account's (from /proc, so
        that procps need not be installed)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    uids = next(line for line in f if line.startswith("Uid:")).split()[1:3]
            except (OSError, StopIteration):
                continue
            if str(self._uid) in uids and pid_alive(int(entry)):
                found.append(int(entry))
        return found

    def remove(self) -> None:
        """Kill whatever still runs as this (test-created) account, by PID, then delete
        the account and its home."""
        if not self.created:
            return
        for _ in range(20):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                wait_for(lambda: not self.processes(), 5.0,
                         f"the processes of {self.name} to end")
            except AssertionError:
                continue
        userdel = _tool("userdel")
        if run_root(userdel, "-r", self.name, check=False).returncode != 0:
            run_root(userdel, "-r", "-f", self.name, check=False)
        if run_root("id", self.name, check=False).returncode == 0:
            raise AssertionError(f"could not delete the test account {self.name}")
        self.created = False

    def own(self, path: Path, mode: int) -> None:
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)


# -- the cluster -----------------------------------------------------------------------------


class Cluster:
    """The venv, the accounts, the admin's multiuser and the users' masters."""

    def __init__(self, users: tuple[str, ...] = USERS, nodes: str = NODES,
                 rules: str = RULES) -> None:
        """``users``: the roles to create accounts for, in registration order; ``nodes``
        and ``rules``: the admin's default files."""
        tag = self.tag = secrets.token_hex(2)
        self.users = tuple(users)
        self.nodes_text, self.rules_text = nodes, rules
        self.venv_root: Path | None = None
        self.admin_account = Account("admin", tag)
        self.accounts = {role: Account(role, tag) for role in self.users}
        self.dirty = False  # an admin file differs from the defaults

    # names -------------------------------------------------------------------------------

    def name(self, user: str) -> str:
        """The Unix name of a role (``alice``) or of the admin (``admin``)."""
        return self.admin_account.name if user == "admin" else self.accounts[user].name

    def new_account(self, role: str) -> str:
        """An account made now, not admitted to the cluster (no bundle, not in
        ``allowed_users``), removed at tear-down like the others; its role."""
        account = Account(role, self.admin_account.name.rsplit("_", 1)[1])
        self.accounts[role] = account
        account.create()
        return role

    def account(self, user: str) -> Account:
        return self.admin_account if user == "admin" else self.accounts[user]

    def role_of(self, name: str) -> str:
        for role, account in self.accounts.items():
            if account.name == name:
                return role
        raise KeyError(name)

    @property
    def bin(self) -> Path:
        assert self.venv_root is not None
        return self.venv_root / "venv" / "bin"

    @property
    def admin_home(self) -> Path:
        return self.admin_account.home / ".qpy-multiuser"

    def qpy_home(self, user: str) -> Path:
        return self.account(user).home / ".qpy"

    # set-up and tear-down ----------------------------------------------------------------

    def set_up(self) -> None:
        self.venv_root = build_venv()
        for account in (self.admin_account, *self.accounts.values()):
            account.create()
        proc = self.run_as(self.users[0], [str(self.bin / "python"), "-c", "import qpy"],
                           check=False)
        assert proc.returncode == 0, (
            f"the shared venv {self.bin.parent} cannot be used by other accounts "
            f"({proc.stderr.strip()}); it needs a python3 >= 3.11 with venv that every "
            f"account can run, at {DEBIAN_PYTHON}")
        home = self.admin_home
        home.mkdir(mode=0o700)
        self.admin_account.own(home, 0o700)
        self.write_admin_file("nodes", self.nodes_text)
        self.write_admin_file("allowed_users", "".join(f"{self.name(u)}\n" for u in self.users))
        self.write_admin_file("distribution_rules", self.rules_text)
        self.dirty = False
        self.start_multiuser()
        bundles = self.admin_account.home / "bundles"
        for user in self.users:
            out = bundles / user
            self.admin("adduser", self.name(user), "--out", str(out))
            self.install_bundle(user, out)
        for user in self.users:  # registration order: the order of self.users
            self.qpy_as(user, "status")

    def install_bundle(self, user: str, bundle: Path) -> None:
        """What the manual asks of the user, done by root: the three files, owned by the
        user, 0600 in a 0700 ``~/.qpy``."""
        account = self.account(user)
        home = self.qpy_home(user)
        owner = ["-o", account.name, "-g", str(account.gid)]
        run_root(_tool("install"), "-d", *owner, "-m", "700", str(home))
        files = sorted(str(p) for p in bundle.glob("multiuser_connection_*"))
        assert len(files) == 3, files
        run_root(_tool("install"), *owner, "-m", "600", *files, str(home))

    def tear_down(self) -> None:
        errors = []
        if self.venv_root is not None:
            for user in self.accounts:
                if self.accounts[user].created and self.master_pid(user):
                    self.qpy_as(user, "kill", "all", check=False)
                    self.qpy_as(user, "finish", check=False)
            if self.admin_account.created and self.multiuser_pid():
                self.admin("finish", check=False)
        for account in (*self.accounts.values(), self.admin_account):
            try:
                account.remove()
            except Exception as exc:  # go on removing the others
                errors.append(str(exc))
        if self.venv_root is not None:
            shutil.rmtree(self.venv_root, ignore_errors=True)
            self.venv_root = None
        if errors:
            raise AssertionError("; ".join(errors))

    # running commands ------------------------------------------------------------------------

    def run_as(self, user: str, argv: list[str], cwd: Path | None = None,
               check: bool = True, timeout: float = COMMAND_TIMEOUT,
               input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` as the account with only the variables a login would set, plus
        QPY_HOME and QPY_ADMIN_HOME: nothing of root's environment leaks in."""
        account = self.account(user)
        proc = subprocess.run(self.argv_as(user, argv), cwd=cwd or account.home,
                              capture_output=True, text=True,
                              timeout=timeout, env=root_env(), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} as {account.name} failed "
                                 f"({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def argv_as(self, user: str, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` as the account (see ``run_as``); for
        callers that start it themselves, with ``root_env()`` as its environment."""
        account = self.account(user)
        home = account.home
        env = [f"HOME={home}", f"USER={account.name}", f"LOGNAME={account.name}",
               f"PATH={self.bin}:/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
               f"QPY_HOME={home / '.qpy'}", f"QPY_ADMIN_HOME={self.admin_home}",
               "QPY_CHECK_REPLIES=1"]
        return [_tool("runuser"), "-u", account.name, "--", "/usr/bin/env", "-i", *env, *argv]

    def qpy_as(self, user: str, *args: str, cwd: Path | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
        """``qpy ARGS`` as a user."""
        return self.run_as(user, [str(self.bin / "qpy"), *args], cwd=cwd, check=check)

    def admin(self, *args: str, check: bool = True,
              user: str = "admin") -> subprocess.CompletedProcess:
        """``qpy-admin ARGS``, as the admin account unless ``user`` says otherwise."""
        return self.run_as(user, [str(self.bin / "qpy-admin"), *args], check=check)

    def status_json(self, user: str) -> dict:
        """``qpy status --json`` as a user: {"version": 1, "users": [...], "nodes": [...]}."""
        doc = json.loads(self.qpy_as(user, "status", "--json").stdout)
        assert doc["version"] == 1, doc
        return doc

    def shares(self, user: str = "alice") -> dict[str, tuple[int, int]]:
        """Role -> (minimum, extra) as ``qpy status --json`` shows them to ``user``."""
        return {self.role_of(u["user"]): (u["minimum"], u["extra"])
                for u in self.status_json(user)["users"]}

    def variables(self) -> dict:
        """``qpy-admin variables`` as the admin, parsed."""
        return json.loads(self.admin("variables").stdout)

    def jobs(self, user: str, *selection: str) -> list[dict]:
        return json_payload(self.qpy_as(user, "check", "--json", *selection).stdout, "jobs")

    def job(self, user: str, job: int) -> dict:
        found = [j for j in self.jobs(user, str(job)) if j["id"] == job]
        assert found, f"job {job} of {user} not found"
        return found[0]

    # the admin's files and daemon ----------------------------------------------------------

    def write_admin_file(self, name: str, text: str) -> None:
        path = self.admin_home / name
        path.write_text(text)
        self.admin_account.own(path, 0o600)
        self.dirty = True

    def start_multiuser(self) -> None:
        self.admin("start")
        assert self.multiuser_pid(), "qpy-admin start returned but no multiuser runs"

    def multiuser_pid(self) -> int | None:
        return _pid_file(self.admin_home / "multiuser.pid")

    def master_pid(self, user: str) -> int | None:
        return _pid_file(self.qpy_home(user) / "master.pid")

    def multiuser_address(self) -> tuple[str, int]:
        return wire.parse_address("127.0.0.1",
                                  (self.admin_home / "multiuser_connection_port").read_text())

    def user_key(self, user: str) -> bytes:
        """The user's own multiuser key, read (as root) from the bundle in their home."""
        return paths.read_key(self.qpy_home(user) / "multiuser_connection_conn_key")

    def connect(self, claimed: str, key: bytes):
        """A wire connection to the multiuser naming ``claimed`` (a Unix name), proving
        ``key``."""
        return wire.connect(self.multiuser_address(), claimed, key)

    def wire_as(self, user: str, steps: list[dict], *, stdin: str | None = None,
                timeout: float = COMMAND_TIMEOUT) -> list[dict]:
        """Run WIRE_PROBE as the account: it connects to the multiuser from the account's
        own process (so the kernel knows it as that account) and follows ``steps``; one
        result per step."""
        spec = json.dumps({"address": list(self.multiuser_address()), "steps": steps})
        proc = self.run_as(user, [str(self.bin / "python"), "-c", WIRE_PROBE],
                           input=spec + "\n" + (stdin or ""), timeout=timeout)
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def wire_process(self, user: str, steps: list[dict]) -> subprocess.Popen:
        """WIRE_PROBE as the account, left running: it prints one JSON line per step and
        waits at each ``{"wait": ...}`` step for a line on its stdin."""
        return self.probe_process(user, WIRE_PROBE, {"steps": steps})

    def probe_process(self, user: str, code: str, spec: dict) -> subprocess.Popen:
        """Python ``code`` run as the account, left running, with ``spec`` and the
        multiuser's address as the first line of its stdin (text pipes both ways)."""
        proc = subprocess.Popen(self.argv_as(user, [str(self.bin / "python"), "-c", code]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=root_env(), cwd=self.account(user).home)
        proc.stdin.write(json.dumps({"address": list(self.multiuser_address()), **spec})
                         + "\n")
        proc.stdin.flush()
        return proc

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), WAIT, f"process {pid} to die")

    # between tests --------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a quiet cluster: default files, the multiuser running, every master
        connected, no job running or queued, nothing allocated."""
        if not self.multiuser_pid():
            self.start_multiuser()
        if self.dirty:
            self.write_admin_file("nodes", self.nodes_text)
            self.write_admin_file("distribution_rules", self.rules_text)
            self.admin("nodes")
            self.admin("distribute")
            self.dirty = False
        for user in self.users:
            self.qpy_as(user, "kill", "all", check=False)  # also starts a stopped master
        for user in self.users:
            wait_for(lambda u=user: not [j for j in self.jobs(u)
                                         if j["status"] in ("queue", "running")],
                     WAIT, f"{user}'s jobs to end")
        names = sorted(self.name(u) for u in self.users)

        def quiet():
            data = self.variables()
            return (sorted(data["connected"]) == names
                    and sorted(data["users"]) == names
                    and all(u["used"] == 0 and not u["jobs"] and u["queue"] == 0
                            for u in data["users"].values())
                    and all(n["used_cores"] == 0 for n in data["nodes"].values()))

        wait_for(quiet, WAIT, "the multiuser to show no allocation and every master connected")

    def workdir(self, user: str, name: str) -> Path:
        """A fresh directory of the user's for one test's jobs."""
        account = self.account(user)
        base = account.home / "work"
        if not base.exists():
            base.mkdir()
            account.own(base, 0o755)
        path = base / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        account.own(path, 0o755)
        return path


class LogTail:
    """What a daemon's log gains from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size

    def text(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()


def _pid_file(path: Path) -> int | None:
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


# -- one user's gated jobs in one directory ---------------------------------------------------


class Jobs:
    """Submit gated jobs as one user in one directory, watch them and release them."""

    def __init__(self, cluster: Cluster, user: str, directory: Path) -> None:
        self.cluster = cluster
        self.user = user
        self.dir = directory
        self.ids: list[int] = []

    def sub_proc(self, *, cores: int = 1, mem: float = 1, attr: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess:
        options = ["-n", str(cores), "-m", f"{mem:g}"]
        if attr is not None:
            options += ["-a", attr]
        return self.cluster.qpy_as(self.user, "sub", *options, "sh", "-c", GATED,
                                   cwd=self.dir, check=check)

    def sub(self, *, cores: int = 1, mem: float = 1, attr: str | None = None) -> int:
        """Submit one gated job; its ID."""
        out = self.sub_proc(cores=cores, mem=mem, attr=attr).stdout
        found = re.fullmatch(r"Job (\d+) received\.\n", out)
        assert found, out
        self.ids.append(int(found.group(1)))
        return self.ids[-1]

    def subs(self, count: int, **kw) -> list[int]:
        return [self.sub(**kw) for _ in range(count)]

    def started(self, job: int) -> bool:
        return (self.dir / f"started_{job}").exists()

    def started_ids(self) -> list[int]:
        return sorted(int(p.name.split("_")[1]) for p in self.dir.glob("started_*"))

    def wait_started(self, *jobs: int) -> None:
        for job in jobs:
            wait_for(lambda j=job: self.started(j), WAIT, f"{self.user}'s job {job} to start")

    def wait_started_count(self, count: int) -> list[int]:
        return wait_for(lambda: len(self.started_ids()) >= count and self.started_ids(), WAIT,
                        f"{count} of {self.user}'s jobs to start")

    def node(self, job: int) -> str:
        """The node the job ran on, as ``qpy check --json`` reports it (and as the job
        itself saw it in QPY_NODE)."""
        record = self.cluster.job(self.user, job)
        seen = (self.dir / f"node_{job}").read_text().strip()
        assert record["node"] == seen, (record, seen)
        return record["node"]

    def status(self, job: int) -> str:
        return self.cluster.job(self.user, job)["status"]

    def release(self, *jobs: int) -> None:
        for job in jobs:
            (self.dir / f"go_{job}").touch()

    def release_all(self) -> None:
        (self.dir / "go").touch()

    def wait_finished(self, *jobs: int) -> list[dict]:
        def finished():
            records = {j["id"]: j for j in self.cluster.jobs(self.user)}
            done = [records.get(job) for job in jobs]
            ok = all(r is not None and r["status"] in FINISHED
                     for r in done)
            return done if ok else None

        return wait_for(finished, WAIT, f"{self.user}'s jobs {list(jobs)} to finish")


def skip_module_unless_available() -> None:
    """At the top of a test module of real accounts: skip the whole module where they
    cannot be made (under ``CI`` the module runs, and its cluster fixture fails instead)."""
    import pytest

    reason = unavailable()
    if reason and not os.environ.get("CI"):
        pytest.skip(reason, allow_module_level=True)


def jobs_of(cluster: Cluster, request) -> Callable[[str], Jobs]:
    """The ``work`` fixture's value: ``work("alice")`` gives alice's gated jobs in a fresh
    directory of hers for this test."""
    return lambda user: Jobs(cluster, user, cluster.workdir(user, request.node.name))
