"""Jobs in directories other users can write to, with real Unix accounts: bob, who shares
a project directory with alice, tries to make alice's own qpy work against her.

The shared directories are the two kinds clusters have: a project directory of a group
alice and bob are both in (setgid, group-writable, 2775), where the kernel's symlink
protection does not apply, and a sticky world-writable one (1777), where it applies
only if ``fs.protected_symlinks`` is on. Bob's traps, each set at the name of alice's
next output file, must all fail, with the reason on alice's job:

- a symbolic link to alice's own file (her job would overwrite it);
- a hard link to it (made by root where ``fs.protected_hardlinks`` stops bob: it is what
  bob could do where that is off);
- a FIFO (her job would hang in ``open`` holding its cores);
- a file of bob's, open to everybody (her output would be his to read).

Also: packages bob leaves in a shared directory are never imported by alice's daemons
started there, and jobs run in the user's login shell (bash, dash, and /bin/sh when the
account's shell is not one).

Needs root (skipped without it unless CI is set).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from multiuser import WAIT, Cluster, run_root, skip_module_unless_available, started_cluster

from qpy.states import FINISHED

skip_module_unless_available()

THESIS = "alice's thesis, three years of work\n"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with started_cluster(users=("alice", "bob")) as c:
        yield c


@pytest.fixture(scope="module")
def project(cluster: Cluster) -> Iterator[str]:
    """A group alice and bob are both in; their masters are started anew so that their
    jobs have it."""
    name = f"qpyproj_{secrets.token_hex(2)}"
    run_root("groupadd", name)
    try:
        for user in ("alice", "bob"):
            run_root("usermod", "-aG", name, cluster.name(user))
            cluster.qpy_as(user, "restart")
        yield name
    finally:
        run_root("groupdel", name, check=False)


@pytest.fixture(params=["group", "sticky"])
def shared(request, cluster: Cluster, project: str) -> Iterator[Path]:
    """A directory alice and bob can both create files in: the project's (2775, group
    ``project``) or a sticky world-writable one (1777)."""
    path = Path(tempfile.mkdtemp(prefix=f"qpy-shared-{request.param}-", dir="/tmp"))
    try:
        if request.param == "group":
            shutil.chown(path, group=project)
            os.chmod(path, 0o2775)
        else:
            os.chmod(path, 0o1777)
        yield path
    finally:
        release_fifos(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def thesis(cluster: Cluster) -> Iterator[Path]:
    """A private file of alice's, in her home."""
    path = cluster.account("alice").home / "thesis.txt"
    path.write_text(THESIS)
    cluster.account("alice").own(path, 0o600)
    yield path
    path.unlink(missing_ok=True)


def release_fifos(directory: Path) -> None:
    """Open every FIFO in ``directory`` for reading: a job blocked opening one for writing
    (qpy before the fix) then goes on and ends, so the test's clean-up does not hang."""
    for path in directory.iterdir():
        if stat.S_ISFIFO(path.lstat().st_mode):
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))


@contextlib.contextmanager
def next_job(cluster: Cluster, user: str, directory: Path, *command: str) -> Iterator[int]:
    """Submit ``command`` as ``user`` in ``directory`` while the queue is paused: the body
    sees the job's ID before the job starts (bob would guess it: IDs go up by one), and
    the job starts when the body is done."""
    cluster.qpy_as(user, "ctrlQueue", "pause")
    try:
        out = cluster.qpy_as(user, "sub", "-m", "1", *command, cwd=directory).stdout
        found = re.fullmatch(r"Job (\d+) received\.\n", out)
        assert found, out
        yield int(found.group(1))
    finally:
        cluster.qpy_as(user, "ctrlQueue", "continue")


def finished(cluster: Cluster, user: str, job: int) -> dict:
    return wait_for(lambda: (r := cluster.job(user, job))["status"] in FINISHED and r,
                    WAIT, f"{user}'s job {job} to end")


def as_bob(cluster: Cluster, *argv: str, check: bool = True):
    return cluster.run_as("bob", list(argv), check=check)


def assert_refused(record: dict, path: Path, why: str) -> None:
    assert record["reason"] == f"failed to start: {path.name} {why}: {path}", record
    assert (record["exit_code"], record["signal"]) == (None, None), record


def assert_cores_free_again(cluster: Cluster, directory: Path) -> None:
    """A refused job holds nothing: the next one runs (and ends) as usual."""
    out = cluster.qpy_as("alice", "sub", "-m", "1", "true", cwd=directory).stdout
    job = int(out.split()[1])
    assert finished(cluster, "alice", job)["exit_code"] == 0


# -- the output files -----------------------------------------------------------------------


def test_a_symbolic_link_at_the_output_name_is_not_followed(cluster, shared, thesis):
    with next_job(cluster, "alice", shared, "echo", "overwritten") as job:
        trap = shared / f"job_{job}.out"
        as_bob(cluster, "ln", "-s", str(thesis), str(trap))
    record = finished(cluster, "alice", job)
    assert_refused(record, trap, "is a symbolic link")
    assert thesis.read_text() == THESIS
    assert trap.is_symlink()


def test_a_dangling_symbolic_link_creates_nothing(cluster, shared):
    """A link to a name that does not exist yet would make alice create that file (in a
    directory of bob's choosing, with bob's name)."""
    target = cluster.account("alice").home / "created_through_the_link"
    with next_job(cluster, "alice", shared, "echo", "hi") as job:
        trap = shared / f"job_{job}.err"
        as_bob(cluster, "ln", "-s", str(target), str(trap))
    assert_refused(finished(cluster, "alice", job), trap, "is a symbolic link")
    assert not target.exists()


def test_a_hard_link_to_the_users_file_is_refused(cluster, shared, thesis):
    with next_job(cluster, "alice", shared, "echo", "overwritten") as job:
        trap = shared / f"job_{job}.out"
        if as_bob(cluster, "ln", str(thesis), str(trap), check=False).returncode != 0:
            os.link(thesis, trap)  # fs.protected_hardlinks stopped bob; where it is off...
    record = finished(cluster, "alice", job)
    assert_refused(record, trap, "has 2 hard links")
    assert thesis.read_text() == THESIS


def test_a_fifo_at_the_output_name_neither_hangs_the_job_nor_holds_its_cores(cluster, shared):
    with next_job(cluster, "alice", shared, "echo", "hi") as job:
        trap = shared / f"job_{job}.err"
        as_bob(cluster, "mkfifo", "-m", "666", str(trap))
    record = finished(cluster, "alice", job)
    assert_refused(record, trap, "is a FIFO")
    assert_cores_free_again(cluster, shared)


def test_an_output_file_of_another_user_is_refused(cluster, shared):
    with next_job(cluster, "alice", shared, "echo", "alice's secret") as job:
        trap = shared / f"job_{job}.out"
        as_bob(cluster, "sh", "-c", f"umask 0; : > {trap}")
    record = finished(cluster, "alice", job)
    assert_refused(record, trap, f"belongs to another user (uid {cluster.account('bob').uid})")
    assert trap.read_text() == ""


def test_output_files_are_alices_and_made_with_her_umask(cluster, shared):
    """No trap: the job runs, its files are alice's, 0666 less her umask."""
    proc = cluster.run_as("alice", ["sh", "-c", "umask 027; exec qpy sub -m 1 echo fine"],
                          cwd=shared)
    job = int(proc.stdout.split()[1])
    assert finished(cluster, "alice", job)["exit_code"] == 0
    for name in (f"job_{job}.out", f"job_{job}.err"):
        st = (shared / name).lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (cluster.account("alice").uid, 0o640)
    assert (shared / f"job_{job}.out").read_text() == "fine\n"


# -- where the daemons import from ------------------------------------------------------------


PLANTED = ("import os, pathlib\n"
           "pathlib.Path({marker!r}, f'ran_as_{{os.getuid()}}').touch()\n")


def test_packages_left_in_a_shared_directory_are_never_imported(cluster, shared):
    """Bob leaves ``qpy_master``, ``qpy_multiuser`` and ``qpy`` packages in the shared
    directory; alice starts her master there and submits from there: none of bob's code
    runs as alice."""
    marks = shared / "marks"
    as_bob(cluster, "mkdir", "-m", "777", str(marks))
    for package in ("qpy", "qpy_master", "qpy_multiuser"):
        as_bob(cluster, "mkdir", str(shared / package))
        for name in ("__init__.py", "__main__.py"):
            cluster.run_as("bob", ["sh", "-c", 'cat > "$0"', str(shared / package / name)],
                           input=PLANTED.format(marker=str(marks)))
    cluster.qpy_as("alice", "restart", cwd=shared)
    out = cluster.qpy_as("alice", "sub", "-m", "1", "echo", "hi", cwd=shared).stdout
    job = int(out.split()[1])
    assert finished(cluster, "alice", job)["exit_code"] == 0
    assert (shared / f"job_{job}.out").read_text() == "hi\n"
    assert not list(marks.iterdir())


# -- the user's login shell -------------------------------------------------------------------


@contextlib.contextmanager
def login_shell(cluster: Cluster, user: str, shell: str) -> Iterator[None]:
    """``user``'s account has ``shell`` (their master started anew, as after a login),
    then /bin/bash again."""
    run_root("usermod", "-s", shell, cluster.name(user))
    try:
        cluster.qpy_as(user, "restart")
        yield
    finally:
        run_root("usermod", "-s", "/bin/bash", cluster.name(user))
        cluster.qpy_as(user, "restart")


def run_line(cluster: Cluster, user: str, line: str) -> tuple[dict, str]:
    """Submit one shell line as ``user``; its record and output once it ended."""
    directory = cluster.workdir(user, "shell")
    out = cluster.qpy_as(user, "sub", "-m", "1", line, cwd=directory).stdout
    job = int(out.split()[1])
    record = finished(cluster, user, job)
    return record, (directory / f"job_{job}.out").read_text()


def test_a_bash_user_gets_bash_for_command_lines_and_sourced_files(cluster):
    record, out = run_line(cluster, "alice", "[[ 1 == 1 ]] && echo yes; readlink /proc/$$/exe; :")
    assert record["exit_code"] == 0, record
    assert out == f"yes\n{os.path.realpath('/bin/bash')}\n"
    env = cluster.account("alice").home / "env.bash"
    env.write_text("declare -A colour=([sky]=blue)\n")
    cluster.account("alice").own(env, 0o644)
    cluster.qpy_as("alice", "config", "sourceTheseFiles", str(env))
    try:
        record, out = run_line(cluster, "alice", 'echo "${colour[sky]}"')
    finally:
        cluster.qpy_as("alice", "config", "sourceTheseFiles", "none")
    assert (record["exit_code"], out) == (0, "blue\n"), record


def test_a_user_whose_shell_is_sh_gets_dash_and_exact_ends(cluster):
    with login_shell(cluster, "bob", "/bin/sh"):
        record, out = run_line(cluster, "bob", "readlink /proc/$$/exe; [[ 1 == 1 ]]")
        assert out == f"{os.path.realpath('/bin/sh')}\n"
        assert record["exit_code"] == 127, record  # dash has no [[
        record, _ = run_line(cluster, "bob", "exit 3")
        assert (record["exit_code"], record["signal"]) == (3, None)
        record, _ = run_line(cluster, "bob", "kill -TERM $$")
        assert (record["exit_code"], record["signal"]) == (None, 15)


@pytest.mark.parametrize("shell", ["/usr/sbin/nologin", "/nonexistent/bash", "fish"])
def test_jobs_of_an_account_without_a_posix_login_shell_run_in_sh(cluster, tmp_path, shell):
    """No shell, a shell that does not exist, or one that does not speak sh (here a
    ``fish`` that would say so if it ran): /bin/sh runs the job."""
    if shell == "fish":
        fake = Path(tempfile.mkdtemp(prefix="qpy-fish-", dir="/var/tmp"))
        os.chmod(fake, 0o755)
        shell = str(fake / "fish")
        Path(shell).write_text("#!/bin/sh\necho the fake fish ran\n")
        os.chmod(shell, 0o755)
    try:
        with login_shell(cluster, "bob", shell):
            record, out = run_line(cluster, "bob", "readlink /proc/$$/exe; :")
    finally:
        if shell.endswith("/fish"):
            shutil.rmtree(Path(shell).parent)
    assert record["exit_code"] == 0, record
    assert out == f"{os.path.realpath('/bin/sh')}\n"
