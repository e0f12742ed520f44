"""Fake cluster nodes on this machine, reached over real OpenSSH (not collected: no
``test_`` prefix).

``Cluster(n)`` starts ``n`` nodes, ``node1`` .. ``nodeN``. Each node is a network namespace
on a private test subnet ``10.250.X.0/24`` (``X`` random, checked to be unrouted here),
joined to the host by a veth pair on a bridge that holds ``10.250.X.1``; node ``I`` has
``10.250.X.(10+I)``. In each node a *holder* process keeps a private UTS namespace
(hostname ``nodeI``) and mount namespace (the harness's hosts file bind-mounted on
``/etc/hosts``), and the node's own ``/usr/sbin/sshd`` runs in all three namespaces,
listening only on the node's address, with an ed25519 host key of its own. Nodes have no
default route and the host does not forward: traffic stays on the test subnet.

The filesystem is shared by all nodes and the host, as on the shared-home clusters qpy
targets. The cluster's user (``qpytest_node_TAG``, created with ``useradd -m``, or an
existing account given with ``user=``) gets an ed25519 key pair, is authorized on every
node, and gets an ssh client config: for a created user that is ``~/.ssh/config``, so a
plain ``ssh node2 CMD`` run as that user works, on the host and on the nodes alike. The
config maps ``nodeI`` to its address and sets ``BatchMode yes``, ``StrictHostKeyChecking
yes`` with a known-hosts file of the harness's own that is pre-filled with the nodes' real
host keys, multiplexing (``ControlMaster auto``, ``ControlPersist 60s``, sockets in a
private directory), ``ConnectTimeout 2`` and ``KexAlgorithms curve25519-sha256``.

Use::

    require()                        # skip (or fail when CI is set) if this cannot work
    with Cluster(3) as cluster:
        cluster.ssh("node1", "hostname").stdout      # 'node1\\n', as the cluster's user
        cluster.run_in_node("node2", ["id", "-un"])  # in node2's namespaces, no ssh
        cluster.stop_sshd("node3")                   # node3 goes down ...
        cluster.start_sshd("node3")                  # ... and comes back

Needs root. Everything is undone by ``teardown()`` (also when set-up fails midway): the
processes in the nodes (the started ones by their recorded PIDs), the host-side ssh
processes of the cluster's users, the namespaces, bridge and veths, the created user with
its home, the temporary files. A state file under ``/run/qpy-netns`` records what a run
created, so a later run removes what a killed run left behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import json
import os
import pwd
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
SSHD = "/usr/sbin/sshd"
TOOLS = ("ip", "unshare", "nsenter", "runuser", "useradd", "userdel", "usermod", "ssh",
         "ssh-keygen", "sleep", "mount", "hostname")
STATE_DIR = Path("/run/qpy-netns")
SUBNET_PREFIX = "10.250"
CONNECT_TIMEOUT = 2  # seconds: a node that is down is reported that fast
WAIT = 30.0  # only a guard against a hang
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


# -- availability ----------------------------------------------------------------------------


def unavailable() -> str | None:
    """Why fake nodes cannot be started here, or None."""
    if os.geteuid() != 0:
        return "netns nodes need root (network namespaces, sshd, test accounts)"
    for tool in TOOLS:
        if shutil.which(tool, path=SBIN_PATH) is None:
            return f"netns nodes need {tool!r} (packages iproute2, util-linux, passwd, " \
                   "openssh-client)"
    if not os.access(SSHD, os.X_OK):
        return f"netns nodes need {SSHD} (package openssh-server)"
    probe = subprocess.run([_tool("unshare"), "--net", "--uts", "--mount", "true"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=_root_env(), timeout=WAIT)
    if probe.returncode != 0:
        return f"cannot create namespaces here (unshare: {probe.stderr.strip()})"
    if _run("ip", "netns", "list", check=False).returncode != 0:
        return "'ip netns' does not work here"
    return None


def require() -> None:
    """pytest.skip when nodes cannot be started here; but fail when ``CI`` is set, so CI
    never skips these tests silently."""
    import pytest

    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
    pytest.skip(reason)


# -- small helpers ---------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    if found is None:
        raise RuntimeError(f"{name} is missing")
    return found


def _root_env() -> dict[str, str]:
    return {"PATH": SBIN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}


def _run(*argv: str, check: bool = True, input: str | None = None,
         timeout: float = WAIT) -> subprocess.CompletedProcess:
    proc = subprocess.run([_tool(argv[0]), *argv[1:]], capture_output=True, text=True,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          env=_root_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pids_of_uid(uid: int) -> list[int]:
    found = []
    for pid in _all_pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                found.append(pid)
        except OSError:
            pass
    return found


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (ssh's control masters show their
    socket path there)."""
    needle = text.encode()
    found = []
    for pid in _all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _netns_pids(netns: str) -> list[int]:
    proc = _run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _kill_all(pids, timeout: float = 10.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are dead (zombies count as dead); returns
    those still alive after ``timeout``."""
    pids = [p for p in set(pids) if p != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _die_with_parent() -> None:
    """preexec_fn: the daemons die when the test process dies, even by SIGKILL."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _routed_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for args in (("route", "show", "table", "all"), ("addr", "show")):
        out = _run("ip", "-j", "-4", *args).stdout
        for entry in json.loads(out or "[]"):
            if "addr_info" in entry:
                for info in entry["addr_info"]:
                    nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                                     strict=False))
            elif entry.get("dst") not in (None, "default"):
                nets.append(ipaddress.ip_network(entry["dst"], strict=False))
    return nets


def _tcp_peers_established(address: str, port: int) -> int:
    """How many host-side TCP sockets are connected (or half-closed) to address:port."""
    want = f"{socket.htonl(int(ipaddress.IPv4Address(address))):08X}:{port:04X}"
    count = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[2] == want and fields[3] in ("01", "08"):  # ESTABLISHED, CLOSE_WAIT
                    count += 1
    except OSError:
        pass
    return count


class _Lock:
    """A machine-wide lock for choosing a subnet and for sweeping stale runs."""

    def __enter__(self):
        STATE_DIR.mkdir(mode=0o755, exist_ok=True)
        self.fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# -- the cluster -----------------------------------------------------------------------------


class Node:
    """One fake node: its names, address, namespace and processes."""

    def __init__(self, index: int, tag: str, subnet: str, root: Path) -> None:
        self.index = index
        self.name = f"node{index}"
        self.address = f"{subnet}.{10 + index}"
        self.netns = f"qpyn-{tag}-{self.name}"
        self.veth = f"qv{tag}n{index}"  # at most 15 characters
        self.dir = root / self.name
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.holder: subprocess.Popen | None = None
        self.sshd: subprocess.Popen | None = None

    @property
    def holder_pid(self) -> int | None:
        return self.holder.pid if self.holder else None

    @property
    def sshd_pid(self) -> int | None:
        return self.sshd.pid if self.sshd and self.sshd.poll() is None else None


class Account:
    """A user authorized on the nodes, with its client config."""

    def __init__(self, name: str, created: bool, home_config: bool, private: Path) -> None:
        self.name = name
        self.created = created
        self.home_config = home_config  # config and key in ~/.ssh, no -F needed
        self.private = private  # harness dir owned by the user: control sockets, config, key
        entry = pwd.getpwnam(name)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh" if self.home_config else self.private

    @property
    def config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    def env(self) -> dict[str, str]:
        return {"PATH": USER_PATH, "HOME": str(self.home), "USER": self.name,
                "LOGNAME": self.name, "LANG": "C.UTF-8", "SHELL": "/bin/sh"}


class Cluster:
    """``n`` fake nodes reachable over OpenSSH; a context manager.

    ``user``: an existing account to use instead of creating ``qpytest_node_TAG``; its
    client config and key then live in a harness directory (``ssh()`` passes ``-F``)
    unless ``home_config=True``, which writes them into its ``~/.ssh`` (refused if a
    config is already there; removed at teardown).
    """

    def __init__(self, n: int = 3, user: str | None = None, home_config: bool = False) -> None:
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 nodes")
        self.n = n
        self.tag = secrets.token_hex(3)
        self.bridge = f"qbr{self.tag}"
        self.subnet: str | None = None  # "10.250.X"
        self.dir: Path | None = None
        self.nodes: dict[str, Node] = {}
        self.accounts: dict[str, Account] = {}
        self.user: str | None = None  # the cluster's (default) user
        self.started_pids: list[int] = []  # every daemon PID this cluster started
        self.startup_seconds: float | None = None
        self._want_user = user
        self._want_home_config = home_config
        self._state_file = STATE_DIR / f"{self.tag}.json"
        self._state: dict = {}
        self._up = False

    # context manager ---------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    # names ----------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def known_hosts(self) -> Path:
        assert self.dir is not None
        return self.dir / "known_hosts"

    @property
    def hosts_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "hosts"

    @property
    def host_address(self) -> str:
        """The host's address on the test subnet (the bridge)."""
        return f"{self.subnet}.1"

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def address(self, name: str) -> str:
        return self.nodes[name].address

    def account(self, user: str | None = None) -> Account:
        return self.accounts[user or self.user]

    def home(self, user: str | None = None) -> Path:
        return self.account(user).home

    # set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the nodes up; on any failure undo what was done and re-raise."""
        began = time.perf_counter()
        try:
            self._start()
        except BaseException:
            try:
                self.teardown()
            except Exception:  # the set-up error is the one to see
                pass
            raise
        self._up = True
        self.startup_seconds = time.perf_counter() - began

    def _start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self.dir = Path(tempfile.mkdtemp(prefix="qpyn-", dir="/tmp"))
        os.chmod(self.dir, 0o711)
        self._state = {"owner": os.getpid(), "owner_start": _start_time(os.getpid()),
                       "tag": self.tag, "dir": str(self.dir), "bridge": self.bridge,
                       "netns": [], "veths": [], "created_user": None,
                       "shadow_restore": {}, "home_files": [], "home_dirs": []}
        with _Lock():
            sweep_stale()
            self._save_state()
            self.subnet = self._choose_subnet()
            self._state["subnet"] = self.subnet
            for i in range(1, self.n + 1):
                node = Node(i, self.tag, self.subnet, self.dir)
                self.nodes[node.name] = node
                self._state["netns"].append(node.netns)
                self._state["veths"].append(node.veth)
            self._save_state()
            self._create_network()
        self._write_hosts_file()
        keygens = [self._keygen(node.host_key, f"root@{name}")
                   for name, node in self.nodes.items()]
        for proc in keygens:
            if proc.wait(timeout=WAIT) != 0:
                raise RuntimeError(f"ssh-keygen failed: {proc.stderr.read()}")
        for node in self.nodes.values():
            node.dir.mkdir(mode=0o700, exist_ok=True)
            self._write_sshd_config(node)
        self._write_known_hosts()
        for node in self.nodes.values():
            self._start_holder(node)
        for node in self.nodes.values():
            self._read_holder_ready(node)
        self._setup_user()
        for node in self.nodes.values():
            self._spawn_sshd(node)
        for node in self.nodes.values():
            self._wait_listening(node)

    def _save_state(self) -> None:
        STATE_DIR.mkdir(mode=0o755, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self._state_file)

    def _choose_subnet(self) -> str:
        used = _routed_networks()
        for state in _read_states():
            if state.get("subnet"):
                used.append(ipaddress.ip_network(f"{state['subnet']}.0/24"))
        candidates = list(range(256))
        random.shuffle(candidates)
        for x in candidates:
            net = ipaddress.ip_network(f"{SUBNET_PREFIX}.{x}.0/24")
            if not any(net.overlaps(u) for u in used):
                return f"{SUBNET_PREFIX}.{x}"
        raise RuntimeError(f"no free /24 in {SUBNET_PREFIX}.0.0/16")

    def _create_network(self) -> None:
        nodes = list(self.nodes.values())
        batch = [f"link add {self.bridge} type bridge"]
        for node in nodes:
            batch.append(f"netns add {node.netns}")
            batch.append(f"link add {node.veth} type veth peer name eth0 netns {node.netns}")
        _run("ip", "-batch", "-", input="\n".join(batch) + "\n")
        for name in [self.bridge] + [node.veth for node in nodes]:  # no IPv6 chatter
            path = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
            if path.exists():
                path.write_text("1")
        batch = [f"addr add {self.host_address}/24 dev {self.bridge}",
                 f"link set {self.bridge} up"]
        batch += [f"link set {node.veth} master {self.bridge} up" for node in nodes]
        _run("ip", "-batch", "-", input="\n".join(batch) + "\n")

    def _write_hosts_file(self) -> None:
        lines = ["127.0.0.1\tlocalhost", f"{self.host_address}\tqpyhead"]
        lines += [f"{node.address}\t{node.name}" for node in self.nodes.values()]
        self.hosts_file.write_text("\n".join(lines) + "\n")
        os.chmod(self.hosts_file, 0o644)

    def _keygen(self, path: Path, comment: str) -> subprocess.Popen:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for old in (path, path.with_name(path.name + ".pub")):
            old.unlink(missing_ok=True)
        return subprocess.Popen([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "",
                                 "-C", comment, "-f", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=_root_env())

    def _write_sshd_config(self, node: Node) -> None:
        assert self.dir is not None
        sftp = "/usr/lib/openssh/sftp-server"
        node.config.write_text(f"""\
# sshd of {node.name}, written by tests/netns_nodes.py
ListenAddress {node.address}:22
AddressFamily inet
HostKey {node.host_key}
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys {self.dir}/authorized_keys/%u
UseDNS no
MaxSessions 100
MaxStartups 100:30:200
X11Forwarding no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
{f"Subsystem sftp {sftp}" if os.path.exists(sftp) else ""}
""")
        os.chmod(node.config, 0o600)

    def _write_known_hosts(self) -> None:
        lines = []
        for node in self.nodes.values():
            key = node.host_key.with_name(node.host_key.name + ".pub").read_text().split()
            lines.append(f"{node.name},{node.address} {key[0]} {key[1]}")
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.known_hosts)

    def _start_holder(self, node: Node) -> None:
        """A process holding the node's UTS and mount namespaces (hostname, /etc/hosts);
        it also configures the node's network. sshd and run_in_node join it."""
        script = f"""set -e
for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6
do [ -w $f ] && echo 1 > $f || true; done
ip addr add {node.address}/24 dev eth0
ip link set eth0 up
ip link set lo up
hostname {node.name}
mount --bind {shlex.quote(str(self.hosts_file))} /etc/hosts
echo ready
exec sleep infinity
"""
        node.dir.mkdir(mode=0o700, exist_ok=True)
        with open(node.dir / "holder.log", "wb") as log:
            node.holder = subprocess.Popen(
                [_tool("ip"), "netns", "exec", node.netns, _tool("unshare"), "--uts",
                 "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                env=_root_env(), start_new_session=True, preexec_fn=_die_with_parent)
        self.started_pids.append(node.holder.pid)

    def _read_holder_ready(self, node: Node) -> None:
        assert node.holder is not None and node.holder.stdout is not None
        line = node.holder.stdout.readline()
        node.holder.stdout.close()
        if line.strip() != b"ready":
            log = (node.dir / "holder.log").read_text(errors="replace").strip()
            raise RuntimeError(f"{node.name}: setting up the namespace failed: {log}")

    def _setup_user(self) -> None:
        if self._want_user is None:
            name = f"qpytest_node_{self.tag}"
            self._state["created_user"] = name
            self._save_state()
            # '*': no password, yet not locked ('!'), which sshd without PAM would refuse
            _run("useradd", "-m", "-s", "/bin/bash", "-p", "*", "-c",
                 "qpy netns nodes test", name)
            self.user = name
            self.authorize(name, home_config=True, _created=True)
        else:
            self.user = self._want_user
            self.authorize(self._want_user, home_config=self._want_home_config)

    def authorize(self, name: str, home_config: bool = False, _created: bool = False) -> Account:
        """Give the existing account ``name`` a key pair authorized on every node and a
        client config (in ``~/.ssh`` with ``home_config``, else in a harness directory:
        see ``ssh_argv``). A locked password field (``!...``) is set to ``*`` until
        teardown, since sshd without PAM refuses locked accounts."""
        assert self.dir is not None
        if name in self.accounts:
            return self.accounts[name]
        private = self.dir / f"u{len(self.accounts)}"  # short: control socket paths
        private.mkdir(mode=0o700)
        account = Account(name, _created, home_config, private)
        os.chown(private, account.uid, account.gid)
        files: list[Path] = []
        if home_config:
            ssh_dir = account.home / ".ssh"
            for path in (account.config, account.key, account.key.with_suffix(".pub")):
                if path.exists() and not _created:
                    raise RuntimeError(f"{path} exists: not overwriting it")
            if not ssh_dir.exists():
                ssh_dir.mkdir(mode=0o700)
                os.chown(ssh_dir, account.uid, account.gid)
                if not _created:
                    self._state["home_dirs"].append(str(ssh_dir))
            files += [account.config, account.key, account.key.with_suffix(".pub")]
        if not _created:
            self._state["home_files"] += [str(p) for p in files]
            self._unlock(name)
            self._save_state()
        proc = self._keygen(account.key, f"{name}@qpy-netns-{self.tag}")
        if proc.wait(timeout=WAIT) != 0:
            raise RuntimeError(f"ssh-keygen failed: {proc.stderr.read()}")
        pub = account.key.with_suffix(".pub").read_text()
        if _created:  # like a real cluster: the shared home authorizes the key everywhere
            authorized = account.home / ".ssh" / "authorized_keys"
            files.append(authorized)
        else:  # leave the account's own authorized_keys alone
            keys_dir = self.dir / "authorized_keys"
            keys_dir.mkdir(mode=0o755, exist_ok=True)
            authorized = keys_dir / name
        authorized.write_text(pub)
        self._write_client_config(account)
        for path in files + [account.key.with_suffix(".pub"), account.config]:
            os.chown(path, account.uid, account.gid)
        os.chown(account.key, account.uid, account.gid)
        os.chmod(account.key, 0o600)
        os.chmod(account.config, 0o600)
        os.chmod(authorized, 0o600 if _created else 0o644)
        self.accounts[name] = account
        return account

    def _unlock(self, name: str) -> None:
        try:
            with open("/etc/shadow") as f:
                entries = [line.split(":") for line in f]
        except OSError:
            return
        for entry in entries:
            if entry[0] == name and entry[1].startswith("!"):
                self._state["shadow_restore"][name] = entry[1]
                self._save_state()
                _run("usermod", "-p", "*", name)

    def _write_client_config(self, account: Account) -> None:
        hosts = []
        for node in self.nodes.values():
            hosts.append(f"Host {node.name}\n    HostName {node.address}\n")
        patterns = " ".join([*self.nodes, *(node.address for node in self.nodes.values())])
        account.config.write_text(f"""\
# qpy netns test nodes, written by tests/netns_nodes.py (cluster {self.tag})
{"".join(hosts)}
Host {patterns}
    User {account.name}
    Port 22
    IdentityFile {account.key}
    IdentitiesOnly yes
    BatchMode yes
    StrictHostKeyChecking yes
    UserKnownHostsFile {self.known_hosts}
    GlobalKnownHostsFile /dev/null
    HashKnownHosts no
    CheckHostIP no
    ControlMaster auto
    ControlPath {account.private}/%C
    ControlPersist 60s
    ConnectTimeout {CONNECT_TIMEOUT}
    ServerAliveInterval 5
    ServerAliveCountMax 2
    KexAlgorithms curve25519-sha256
    ForwardAgent no
    ForwardX11 no
""")

    def _spawn_sshd(self, node: Node) -> None:
        assert node.holder is not None
        with open(node.log, "ab") as log:
            # nsenter and sshd -D exec in place: the PID is sshd's own
            node.sshd = subprocess.Popen(
                [_tool("nsenter"), "-t", str(node.holder.pid), "-n", "-u", "-m", "--",
                 SSHD, "-D", "-e", "-f", str(node.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_root_env(),
                start_new_session=True, preexec_fn=_die_with_parent)
        self.started_pids.append(node.sshd.pid)

    def _wait_listening(self, node: Node) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            assert node.sshd is not None
            if node.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {node.name} exited ({node.sshd.returncode}): "
                                   f"{node.log.read_text(errors='replace').strip()}")
            try:
                with socket.create_connection((node.address, 22), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {node.name} does not answer")
            time.sleep(0.005)

    # running things -------------------------------------------------------------------------

    def ssh_argv(self, node: str, command: str | None = None, user: str | None = None,
                 options: tuple[str, ...] = ()) -> list[str]:
        """``runuser -u USER -- ssh [-F CONFIG] OPTIONS NODE [COMMAND]`` (run it with
        ``env=cluster.account(user).env()``)."""
        account = self.account(user)
        argv = [_tool("runuser"), "-u", account.name, "--", _tool("ssh")]
        if not account.home_config:
            argv += ["-F", str(account.config)]
        argv += [*options, node]
        if command is not None:
            argv.append(command)
        return argv

    def ssh(self, node: str, command: str, user: str | None = None, *,
            options: tuple[str, ...] = (), input: str | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """``ssh NODE COMMAND`` as ``user`` (default: the cluster's), through the user's
        client config; text output captured, never raises on failure."""
        return subprocess.run(self.ssh_argv(node, command, user, options),
                              capture_output=True, text=True, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              env=self.account(user).env(), timeout=timeout)

    def node_argv(self, node: str, argv: list[str], user: str | None = None) -> list[str]:
        """argv that runs ``argv`` inside ``node`` (its network, hostname and /etc/hosts)
        as ``user`` (default: the cluster's user; ``"root"`` for root), without ssh."""
        holder = self.nodes[node].holder_pid
        assert holder is not None
        prefix = [_tool("nsenter"), "-t", str(holder), "-n", "-u", "-m", "--"]
        if user == "root":
            return prefix + argv
        return prefix + [_tool("runuser"), "-u", self.account(user).name, "--"] + argv

    def run_in_node(self, node: str, argv: list[str], user: str | None = None,
                    timeout: float = 60.0) -> subprocess.CompletedProcess:
        env = _root_env() if user == "root" else self.account(user).env()
        return subprocess.run(self.node_argv(node, argv, user), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, env=env, timeout=timeout)

    def node_pids(self, node: str) -> list[int]:
        """Every process in the node's network namespace (the holder included)."""
        return _netns_pids(self.nodes[node].netns)

    # failures -------------------------------------------------------------------------------

    def stop_sshd(self, node: str, everything: bool = True) -> None:
        """Stop the node's sshd. With ``everything`` (the default) the node goes down:
        every process in it but the namespace holder is killed too (ssh connections, the
        sessions and whatever they started), and this returns once the host's ssh clients
        have seen their connections close. Without it only the listener stops (like an
        sshd restart: running sessions go on). Connecting then fails at once."""
        n = self.nodes[node]
        if n.sshd is not None:
            n.sshd.kill()
            n.sshd.wait(timeout=WAIT)
        if everything:
            others = [p for p in _netns_pids(n.netns) if p != n.holder_pid]
            left = _kill_all(others)
            if left:
                raise RuntimeError(f"{node}: processes {left} survive SIGKILL")
            deadline = time.monotonic() + WAIT
            while _tcp_peers_established(n.address, 22) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.02)  # let the clients' control masters finish exiting

    def cut_link(self, node: str) -> None:
        """The node's network cable is pulled: its side of the bridge goes down, so packets
        to and from it are dropped (no reset, no refusal). Everything in the node, its
        sshd and the sessions in it, goes on as if the other ends were just silent."""
        _run("ip", "link", "set", self.nodes[node].veth, "down")

    def restore_link(self, node: str) -> None:
        """Plug the cable back in (``cut_link`` undone)."""
        _run("ip", "link", "set", self.nodes[node].veth, "master", self.bridge, "up")

    def start_sshd(self, node: str) -> None:
        """(Re)start the node's sshd and wait until it answers."""
        n = self.nodes[node]
        if n.sshd_pid is not None:
            return
        self._spawn_sshd(n)
        self._wait_listening(n)

    def change_host_key(self, node: str) -> None:
        """The node is reinstalled: it goes down, gets a new host key and comes back.
        known_hosts is NOT updated, so ssh to it must now fail host key verification."""
        self.stop_sshd(node)
        n = self.nodes[node]
        proc = self._keygen(n.host_key, f"root@{node}")
        if proc.wait(timeout=WAIT) != 0:
            raise RuntimeError(f"ssh-keygen failed: {proc.stderr.read()}")
        self.start_sshd(node)

    def trust_host_keys(self) -> None:
        """Rewrite known_hosts from the nodes' current host keys (after change_host_key,
        the admin's fix)."""
        self._write_known_hosts()

    # teardown -------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Undo everything; safe to call twice and after a failed start. Raises if
        something could not be removed."""
        self._up = False
        if not self._state:
            return
        errors = _destroy(self._state, self._popens())
        for node in self.nodes.values():
            for proc in (node.holder, node.sshd):
                if proc is not None and proc.poll() is None:
                    try:
                        proc.wait(timeout=WAIT)
                    except subprocess.TimeoutExpired:
                        errors.append(f"PID {proc.pid} did not exit")
        self._state = {}
        if errors:
            raise RuntimeError("netns nodes teardown: " + "; ".join(errors))

    def _popens(self) -> list[subprocess.Popen]:
        return [p for node in self.nodes.values() for p in (node.holder, node.sshd)
                if p is not None]


# -- destroying (a live cluster's, or a killed run's left-overs) -----------------------------


def _read_states() -> list[dict]:
    states = []
    if not STATE_DIR.is_dir():
        return states
    for path in STATE_DIR.glob("*.json"):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return states


def sweep_stale() -> None:
    """Remove what runs whose test process is gone left behind (call with _Lock held)."""
    for state in _read_states():
        owner = state.get("owner")
        if owner and pid_alive(owner) and _start_time(owner) == state.get("owner_start"):
            continue
        _destroy(state, [])


def _destroy(state: dict, popens: list[subprocess.Popen]) -> list[str]:
    errors: list[str] = []
    root = state.get("dir")
    # 1. every process in the nodes, and the daemons started (by their PIDs)
    victims = [p.pid for p in popens if p.poll() is None]
    for netns in state.get("netns", []):
        victims += _netns_pids(netns)
    # 2. host-side processes of the users: all of a created user's, and the control
    #    masters of taken users (their command line names the harness's directory)
    user = state.get("created_user")
    if user:
        try:
            victims += _pids_of_uid(pwd.getpwnam(user).pw_uid)
        except KeyError:
            pass
    if root:
        victims += _pids_mentioning(root + "/")
    left = _kill_all(victims)
    for proc in popens:
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pass
    if left:
        errors.append(f"processes {left} survive SIGKILL")
    # 3. the network
    for netns in state.get("netns", []):
        if Path("/run/netns", netns).exists():
            proc = _run("ip", "netns", "del", netns, check=False)
            if proc.returncode != 0:
                errors.append(f"ip netns del {netns}: {proc.stderr.strip()}")
    for link in [state.get("bridge"), *state.get("veths", [])]:
        if link and Path("/sys/class/net", link).exists():
            proc = _run("ip", "link", "del", link, check=False)
            if proc.returncode != 0 and Path("/sys/class/net", link).exists():
                errors.append(f"ip link del {link}: {proc.stderr.strip()}")
    # 4. accounts
    for name, hashed in state.get("shadow_restore", {}).items():
        _run("usermod", "-p", hashed, name, check=False)
    for path in state.get("home_files", []):
        Path(path).unlink(missing_ok=True)
    for path in state.get("home_dirs", []):
        try:
            os.rmdir(path)  # only if empty: what the account put there stays
        except OSError:
            pass
    if user:
        _run("userdel", "-r", "-f", user, check=False)
        try:
            pwd.getpwnam(user)
            errors.append(f"could not delete the user {user}")
        except KeyError:
            pass
    # 5. files
    if root:
        shutil.rmtree(root, ignore_errors=True)
        if os.path.exists(root):
            errors.append(f"could not remove {root}")
    if state.get("tag"):
        (STATE_DIR / f"{state['tag']}.json").unlink(missing_ok=True)
        (STATE_DIR / f"{state['tag']}.tmp").unlink(missing_ok=True)
    return errors
