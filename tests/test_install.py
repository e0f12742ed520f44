"""The administrators' manual, "Installing qpy on a cluster", followed step by step: from
fresh accounts (a qpy admin and two users, made with ``useradd``) to the first job of the
second user, on two nodes reached over real OpenSSH in network namespaces
(tests/netns_nodes.py); and the systemd unit that ships with qpy, checked with
``systemd-analyze verify`` and run as systemd runs it (as ``User=``, in the foreground,
stopped with SIGTERM).

The commands are kept below as lists that mirror the manual; a test checks that they are
what the manual says, so when the chapter changes this test fails until the lists follow.
Where the manual has the admin edit files (``vi``), the test writes them as that account.
``/opt/qpy`` is a fresh directory under /var/tmp, and ``/path/to/qpy`` a copy of this
checkout.

Needs root; skipped otherwise, except under CI.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import multiuser
import netns_nodes
import pytest
from conftest import pid_alive, wait_for
from multiuser import WAIT, Cluster, run_root

REASON = multiuser.unavailable() or netns_nodes.unavailable()
if REASON and not os.environ.get("CI"):
    pytest.skip(REASON, allow_module_level=True)

UNIT = multiuser.REPO / "systemd" / "qpy-multiuser.service"
# admin.md, "Setting up": every command shown, in order (step 1 as root, 2-3 as the qpy
# admin account, 5 as a user).
INSTALL = ["python3 -m venv /opt/qpy", "/opt/qpy/bin/pip install /path/to/qpy"]
ADMIN = ["mkdir -m 700 ~/.qpy-multiuser", "cd ~/.qpy-multiuser",
         "vi nodes allowed_users distribution_rules", "qpy-admin start", "qpy-admin status"]
FIRST_JOB = ["qpy sub hostname", "qpy check"]
# admin.md, "Running the allocator under systemd", as root.
SYSTEMD = ["cp /opt/qpy/share/qpy/systemd/qpy-multiuser.service /etc/systemd/system/",
           "vi /etc/systemd/system/qpy-multiuser.service",
           "systemd-analyze verify /etc/systemd/system/qpy-multiuser.service",
           "systemctl daemon-reload", "systemctl enable --now qpy-multiuser"]
# What the admin writes with vi: the two namespace nodes; users come with adduser.
FILES = {"nodes": "# two namespace nodes\nnode1 cores=2 memory=8\nnode2 cores=2 memory=8\n",
         "allowed_users": "", "distribution_rules": "even\n"}
SHIPPED = ("share/qpy/systemd/qpy-multiuser.service", "share/qpy/bash_completion.sh",
           "share/man/man1/qpy.1")


def section(name: str, heading: str) -> str:
    """The manual's section under ``heading``, up to the next heading of its level or
    above (lines in code blocks that start with ``#`` are root's prompts, not headings)."""
    level = len(heading.split()[0])
    lines = (multiuser.REPO / "manual" / name).read_text().splitlines()
    start = lines.index(heading)
    fenced = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        fenced ^= line.strip().startswith("```")
        marks = len(line) - len(line.lstrip("#"))
        if not fenced and 0 < marks <= level and line[marks:marks + 1] == " ":
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])


def commands(text: str) -> list[str]:
    """The ``$ `` and ``# `` lines of the code blocks (indented ones too)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("$ ", "# ")):
            found.append(line[2:])
    return found


def test_the_steps_are_the_manuals():
    assert commands(section("admin.md", "### Setting up")) == [*INSTALL, *ADMIN, *FIRST_JOB]
    assert commands(section("admin.md", "### Running the allocator under systemd")) == SYSTEMD
    admitting = section("admin.md", "## Adding and removing users")
    assert "Run `qpy-admin adduser NAME`" in admitting and "`qpy join CODE`" in admitting
    assert "Run `qpy-admin distribute`" in admitting


def install(root: Path) -> None:
    """Step 1 as root: a venv at ``root/venv`` (the manual's /opt/qpy) and pip install of
    a copy of this checkout (the manual's /path/to/qpy), readable by every account."""
    os.chmod(root, 0o755)
    src = root / "src"
    src.mkdir()
    for name in multiuser.SOURCES:
        path = multiuser.REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    opt = root / "venv"
    for step in INSTALL:
        step = step.replace("/opt/qpy", str(opt)).replace("/path/to/qpy", str(src))
        argv = shlex.split(step)
        if argv[0] == "python3":
            argv[0] = multiuser.base_python()
        if "pip" in step:
            argv.insert(-1, "-q")
        run_root(*argv)
    run_root("chmod", "-R", "a+rX", str(root))


@pytest.fixture(scope="module")
def world():
    """(cluster, nodes): qpy installed as step 1 says, accounts for the admin, alice and
    bob, none of them set up for qpy; all three can ssh to node1 and node2."""
    multiuser.require()
    netns_nodes.require()
    cluster = Cluster(users=("alice", "bob"))
    try:
        cluster.venv_root = Path(tempfile.mkdtemp(prefix="qpy-install-", dir="/var/tmp"))
        install(cluster.venv_root)
        for account in (cluster.admin_account, *cluster.accounts.values()):
            account.create()
        with netns_nodes.Cluster(2, user=cluster.name("alice"), home_config=True) as nodes:
            for role in ("admin", "bob"):
                nodes.authorize(cluster.name(role), home_config=True)
            yield cluster, nodes
    finally:
        cluster.tear_down()


def as_admin(cluster: Cluster, line: str) -> subprocess.CompletedProcess:
    return cluster.run_as("admin", ["bash", "-c", line])


def test_the_installation_holds_what_the_manual_names(world):
    cluster, _ = world
    for path in SHIPPED:
        assert (cluster.venv_root / "venv" / path).is_file(), path
    shipped = cluster.venv_root / "venv" / SHIPPED[0]
    assert shipped.read_text() == UNIT.read_text()


def test_from_a_fresh_admin_account_to_the_second_users_first_job(world):
    cluster, _ = world
    home = cluster.admin_home
    assert not home.exists()  # a fresh account: nothing of qpy yet
    # 2. the admin home and the three files; the cd and the vi as one shell line
    mkdir, cd, _vi = ADMIN[:3]
    writes = " && ".join(f"printf %s {shlex.quote(text)} > {name}"
                         for name, text in FILES.items())
    as_admin(cluster, f"{mkdir} && {cd} && {writes}")
    assert home.stat().st_mode & 0o777 == 0o700
    # 3. start it, and look until every node has been checked: both up
    assert as_admin(cluster, ADMIN[3]).stdout == "Starting qpy-multiuser driver.\n"
    seen = []

    def both_up() -> bool:
        seen.append(as_admin(cluster, ADMIN[4]).stdout)
        return node_states(seen[-1]) == {"node1": "up", "node2": "up"}

    try:
        wait_for(both_up, WAIT, "qpy-admin status to show both nodes up")
    except AssertionError:
        raise AssertionError(f"qpy-admin status:\n{seen[-1]}") from None
    assert "Up nodes (2 of 2): node1, node2\n" in seen[-1]
    # 4. admit the users ("Adding and removing users"): adduser, the user joins, distribute
    for role in ("alice", "bob"):
        admit(cluster, role)
    # 5. the first user's first job, then the second user's
    for role in ("alice", "bob"):
        first_job(cluster, role)
    users = {u["user"] for u in cluster.status_json("bob")["users"]}
    assert users == {cluster.name("alice"), cluster.name("bob")}


def node_states(text: str) -> dict[str, str]:
    """node -> up, or the state in brackets after its name (unknown, down, drained ...),
    from ``qpy-admin status``'s node table."""
    states = {}
    for line in text.splitlines():
        found = re.match(r"(node[12])(?: \((\w+)\))? ", line)
        if found:
            states[found.group(1)] = found.group(2) or "up"
    return states


def admit(cluster: Cluster, role: str) -> None:
    name = cluster.name(role)
    out = as_admin(cluster, f"qpy-admin adduser {name}").stdout
    found = re.search(r"runs, on this host: qpy join (\S+)\n", out)
    assert out.startswith(f"User {name} added.\n") and found, out
    joined = cluster.run_as(role, ["bash", "-c", f"qpy join {found.group(1)}"])
    assert joined.stderr == "", joined.stderr
    as_admin(cluster, "qpy-admin distribute")


def first_job(cluster: Cluster, role: str) -> None:
    home = cluster.account(role).home
    sub, check = FIRST_JOB
    assert cluster.run_as(role, ["bash", "-c", sub]).stdout == "Job 1 received.\n"
    wait_for(lambda: [j["status"] for j in cluster.jobs(role)] == ["done"], WAIT,
             f"{role}'s first job to run")
    proc = cluster.run_as(role, ["bash", "-c", check])
    assert proc.stderr == ""
    line = proc.stdout.splitlines()[-1]
    found = re.fullmatch(rf"1 \(done\):hostname \(on (node[12]); wd: {home}\)", line)
    assert found, line  # on a namespace node, not on this machine
    assert (home / "job_1.out").read_text() == found.group(1) + "\n"  # its own hostname


# -- the systemd unit ---------------------------------------------------------------------


def unit_for(cluster: Cluster, admin_home: Path) -> str:
    """The shipped unit as the manual has the admin edit it: User=, ExecStart= and the
    Environment= line for an admin home of its own."""
    text = UNIT.read_text()
    text = text.replace("User=qpyadm", f"User={cluster.name('admin')}")
    text = text.replace("ExecStart=/opt/qpy/bin/", f"ExecStart={cluster.bin}/")
    return text.replace("#Environment=QPY_ADMIN_HOME=/srv/qpy/admin",
                        f"Environment=QPY_ADMIN_HOME={admin_home}")


def test_the_systemd_unit_verifies_and_runs_the_allocator_as_systemd_would(world, tmp_path):
    cluster, _ = world
    if shutil.which("systemd-analyze", path=multiuser.SBIN_PATH) is None:
        reason = "needs systemd-analyze (package systemd, installed by .ci/run)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    admin = cluster.account("admin")
    admin_home = admin.home / "unit-home"
    as_admin(cluster, f"mkdir -m 700 {admin_home} && cd {admin_home} && "
             "printf 'n1 address=localhost cores=1 memory=1\\n' > nodes && "
             ": > allowed_users && echo even > distribution_rules")
    unit = tmp_path / "qpy-multiuser.service"
    unit.write_text(unit_for(cluster, admin_home))
    verify = run_root("systemd-analyze", "verify", "--man=no", str(unit), check=False)
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")
    service = configparser.ConfigParser(interpolation=None, strict=False)
    service.optionxform = str
    service.read_string(unit.read_text())
    spec = service["Service"]
    assert (spec["Type"], spec["KillMode"], spec["Restart"]) == ("exec", "mixed", "on-failure")
    daemon = start_as_systemd(spec, admin)
    try:
        env = {"QPY_ADMIN_HOME": str(admin_home)}
        wait_for(lambda: admin_command(cluster, env, "status").returncode == 0, WAIT,
                 "the service's allocator to answer")
        busy = admin_command(cluster, env, "start")
        assert busy.returncode != 0
        assert busy.stderr == "qpy-admin: a multiuser is already running for this admin home\n"
        assert (admin_home / "multiuser.pid").read_text() == f"{daemon.pid}\n"
        daemon.send_signal(signal.SIGTERM)  # systemctl stop, KillMode=mixed
        assert daemon.wait(WAIT) == 0  # a clean exit: Restart=on-failure leaves it stopped
        assert not (admin_home / "multiuser.pid").exists()
        assert "multiuser stopping" in (admin_home / "multiuser.log").read_text()
    finally:
        if daemon.poll() is None and pid_alive(daemon.pid):
            daemon.kill()
            daemon.wait()


def start_as_systemd(spec: configparser.SectionProxy, admin: multiuser.Account):
    """ExecStart= in the foreground as User= with the environment systemd gives a system
    service (HOME, USER, LOGNAME, SHELL, a plain PATH, and Environment=)."""
    assert spec["User"] == admin.name
    name, _, value = spec["Environment"].partition("=")
    env = {"HOME": str(admin.home), "USER": admin.name, "LOGNAME": admin.name,
           "SHELL": "/bin/bash", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "QPY_CHECK_REPLIES": "1", name: value}
    return subprocess.Popen(shlex.split(spec["ExecStart"]), user=admin.uid, group=admin.gid,
                            extra_groups=[], env=env, cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def admin_command(cluster: Cluster, env: dict, *args: str) -> subprocess.CompletedProcess:
    assignments = [f"{k}={v}" for k, v in env.items()]
    return cluster.run_as("admin", ["env", *assignments, str(cluster.bin / "qpy-admin"),
                                    *args], check=False)
