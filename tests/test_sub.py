"""``qpy sub`` through the real CLI: replies, quoting, files, environment, exit records,
#QPY directives, script copies, and refusals of bad input."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import NODE, QPY, wait_for

from qpy import paths, wire

RECEIVED = re.compile(r"Job (\d+) received\.\n")


def received(stdout: str) -> int:
    """The job ID of a ``Job N received.`` reply; fails on any other reply."""
    match = RECEIVED.fullmatch(stdout)
    assert match, f"unexpected reply {stdout!r}"
    return int(match.group(1))


def finished(qpy, *args: str, cwd: Path | None = None) -> tuple[int, dict]:
    """Submit, wait until the job is over, return its ID and record."""
    job = qpy.sub(*args, cwd=cwd)
    return job, qpy.wait_status(job)


def out(qpy, job: int, where: Path | None = None) -> str:
    return ((where or qpy.work) / f"job_{job}.out").read_text()


def script(path: Path, body: str, executable: bool = True) -> Path:
    path.write_text(body)
    if executable:
        path.chmod(0o755)
    return path


# --- replies and running -------------------------------------------------------------------


def test_reply_names_job_and_ids_increase(qpy):
    first = qpy.run("sub", "true")
    second = qpy.run("sub", "true")
    third = qpy.run("sub", "true")
    assert first.stdout == "Job 1 received.\n"
    assert second.stdout == "Job 2 received.\n"
    assert third.stdout == "Job 3 received.\n"
    assert first.stderr == second.stderr == third.stderr == ""


def test_several_words_keep_their_quoting(qpy):
    job, record = finished(qpy, "echo", "a  b")
    assert record["status"] == "done"
    assert out(qpy, job) == "a  b\n"


def test_argument_with_shell_characters_is_not_interpreted(qpy):
    job, _ = finished(qpy, "echo", "x | tr x y", "$HOME")
    assert out(qpy, job) == "x | tr x y $HOME\n"


def test_single_argument_is_a_shell_line(qpy):
    job, record = finished(qpy, "echo x | tr x y")
    assert record["exit_code"] == 0
    assert out(qpy, job) == "y\n"


def test_a_shell_line_runs_in_the_users_login_shell(qpy):
    """The account's shell from the password database runs the line (here: the test
    runner's own account; tests/test_shared_dirs.py switches real accounts' shells)."""
    import pwd

    shell = pwd.getpwuid(os.getuid()).pw_shell
    if os.path.basename(shell) not in ("bash", "dash", "sh", "zsh", "ksh"):
        pytest.skip(f"this account's shell is {shell}")
    job, record = finished(qpy, "readlink /proc/$$/exe; :")
    assert record["exit_code"] == 0
    assert out(qpy, job) == os.path.realpath(shell) + "\n"


def test_output_files_in_submission_directory_and_job_runs_there(qpy):
    subdir = qpy.work / "runs" / "a"
    subdir.mkdir(parents=True)
    job, record = finished(qpy, "sh", "-c", "pwd; echo oops >&2", cwd=subdir)
    assert record["cwd"] == os.path.realpath(subdir)
    assert Path(out(qpy, job, subdir).strip()).resolve() == subdir.resolve()
    assert (subdir / f"job_{job}.err").read_text() == "oops\n"
    assert not (qpy.work / f"job_{job}.out").exists()
    assert not (qpy.work / f"job_{job}.err").exists()


def test_output_files_and_the_job_get_the_submitters_umask(qpy):
    """``umask 077; qpy sub ...``: the output files are 0600 and the job runs with 077,
    as it would have run in that shell; another umask gives other modes."""
    for mask, mode in ((0o077, 0o600), (0o027, 0o640), (0o002, 0o664)):
        proc = subprocess.run([QPY, "sub", "sh", "-c", "umask; touch made"], cwd=qpy.work,
                              env=qpy.env, capture_output=True, text=True, umask=mask,
                              stdin=subprocess.DEVNULL, timeout=120)
        job = received(proc.stdout)
        assert qpy.wait_status(job)["exit_code"] == 0
        assert out(qpy, job) == f"{mask:04o}\n"
        for name in (f"job_{job}.out", f"job_{job}.err"):
            assert stat.S_IMODE((qpy.work / name).stat().st_mode) == mode, (name, oct(mask))
        assert stat.S_IMODE((qpy.work / "made").stat().st_mode) == mode
        (qpy.work / "made").unlink()


def raw_sub(qpy, **extra) -> dict:
    """A ``sub`` request as the wire carries it, with ``extra`` fields; the reply."""
    qpy.run("status")
    key = paths.read_key(qpy.home / "master.key")
    with wire.connect(str(qpy.home / "master.sock"), wire.whoami(), key) as conn:
        return wire.call(conn, {"type": "sub", "command": "umask", "cwd": str(qpy.work),
                                "env": {"PATH": os.environ["PATH"]}, "n_cores": 1,
                                "mem": 1.0, "attr": None, "copy": None, "script": None,
                                **extra}, 60.0)


def test_a_umask_out_of_range_is_refused(qpy):
    for bad in (0o1000, -1):
        reply = raw_sub(qpy, umask=bad)
        assert (reply["ok"], reply["code"]) == (False, "bad_request"), reply
        assert reply["error"] == f"the umask must be between 0 and 0o777, not {bad:#o}"
    assert qpy.jobs() == []


def test_a_client_that_sends_no_umask_gets_022(qpy):
    """A ``sub`` request of an older client, without the umask: output files are 0644."""
    reply = raw_sub(qpy)
    assert reply["ok"], reply
    job = reply["job"]
    assert qpy.wait_status(job)["exit_code"] == 0
    assert out(qpy, job) == "0022\n"
    assert stat.S_IMODE((qpy.work / f"job_{job}.out").stat().st_mode) == 0o644


def test_an_output_file_of_the_users_own_is_replaced(qpy):
    """An existing ``job_<ID>.out`` of the user's own (a home made anew, say) is truncated
    and written, as before."""
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("echo", "new")
    (qpy.work / f"job_{job}.out").write_text("an old and longer text\n")
    qpy.run("ctrlQueue", "continue")
    assert qpy.wait_status(job)["exit_code"] == 0
    assert out(qpy, job) == "new\n"


def test_qpy_variables_are_set(qpy):
    job, _ = finished(qpy, "-n", "2", "-m", "1.5", "sh", "-c",
                      'echo "$QPY_JOB_ID|$QPY_NODE|$QPY_N_CORES|$QPY_MEM"')
    assert out(qpy, job) == f"{job}|{NODE}|2|1.5\n"


def test_default_resources_reach_the_job(qpy):
    job, record = finished(qpy, 'echo "$QPY_N_CORES|$QPY_MEM"')
    assert (record["n_cores"], record["mem"]) == (1, 5.0)
    assert out(qpy, job) == "1|5\n"


def test_submitting_shell_environment_reaches_the_job(qpy):
    qpy.run("check")  # the master is already running without FOO in its own environment
    env = {**qpy.env, "FOO": "custom value 42"}
    job = received(qpy.run("sub", "sh", "-c", 'echo "$FOO"', env=env).stdout)
    qpy.wait_status(job)
    assert out(qpy, job) == "custom value 42\n"
    # A later submission without FOO does not see the earlier one's environment.
    job2, _ = finished(qpy, "sh", "-c", 'echo "[${FOO-unset}]"')
    assert out(qpy, job2) == "[unset]\n"


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_recorded(qpy, code):
    _, record = finished(qpy, "sh", "-c", f"exit {code}")
    assert record["status"] == "done"
    assert record["exit_code"] == code
    assert record["signal"] is None


def test_death_by_signal_recorded(qpy):
    _, record = finished(qpy, "sh", "-c", "kill -9 $$")
    assert record["signal"] == 9
    assert record["exit_code"] is None


def test_death_by_signal_of_shell_line_recorded(qpy):
    _, record = finished(qpy, "kill -9 $$")
    assert record["signal"] == 9
    assert record["exit_code"] is None


# --- #QPY directives --------------------------------------------------------------------


def test_directives_on_separate_lines(qpy):
    script(qpy.work / "job.sh",
           "#!/bin/sh\n#QPY n_cores=2\n#QPY mem=2\n#QPY node_attr=localhost\n"
           'echo "$QPY_N_CORES $QPY_MEM"\n')
    job, record = finished(qpy, "./job.sh")
    assert record["n_cores"] == 2
    assert record["mem"] == 2
    assert record["attr"] == "localhost"
    assert out(qpy, job) == "2 2\n"


def test_several_directives_on_one_line(qpy):
    script(qpy.work / "job.sh", "#!/bin/sh\n#QPY n_cores=2; mem=2.5\ntrue\n")
    _, record = finished(qpy, "./job.sh")
    assert record["n_cores"] == 2
    assert record["mem"] == 2.5


def test_command_line_overrides_directive(qpy):
    script(qpy.work / "job.sh", "#!/bin/sh\n#QPY n_cores=2; mem=2\n#QPY node_attr=localhost\n"
                                "true\n")
    _, record = finished(qpy, "-n", "1", "./job.sh")
    assert record["n_cores"] == 1
    assert record["mem"] == 2  # directives not overridden still apply
    assert record["attr"] == "localhost"


def test_directives_read_when_script_follows_interpreter(qpy):
    script(qpy.work / "job.sh", "#QPY n_cores=2; mem=2.5\necho ran\n", executable=False)
    job, record = finished(qpy, "bash", "job.sh")
    assert record["n_cores"] == 2
    assert record["mem"] == 2.5
    assert out(qpy, job) == "ran\n"


def test_no_directives_means_defaults(qpy):
    script(qpy.work / "job.sh", "#!/bin/sh\n# QPY n_cores=2 (not a directive)\ntrue\n")
    _, record = finished(qpy, "./job.sh")
    assert (record["n_cores"], record["mem"], record["attr"]) == (1, 5.0, None)


# --- script copies ----------------------------------------------------------------------


def _paused_then_edited(qpy, *sub_args: str) -> str:
    """Submit while paused, rewrite the script, continue; return what the job printed."""
    path = script(qpy.work / "job.sh", "#!/bin/sh\necho original\n")
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub(*sub_args, "./job.sh")
    assert qpy.job(job)["status"] == "queue"
    path.write_text("#!/bin/sh\necho modified\n")
    qpy.run("ctrlQueue", "continue")
    record = qpy.wait_status(job)
    assert record["exit_code"] == 0
    return out(qpy, job)


def test_without_copy_the_job_runs_the_current_script(qpy):
    assert _paused_then_edited(qpy) == "modified\n"


def test_copy_option_runs_script_as_submitted(qpy):
    assert _paused_then_edited(qpy, "-c") == "original\n"


def test_copy_directive_runs_script_as_submitted(qpy):
    path = script(qpy.work / "job.sh", "#!/bin/sh\n#QPY cpScript=true\necho original\n")
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("./job.sh")
    path.write_text("#!/bin/sh\necho modified\n")
    qpy.run("ctrlQueue", "continue")
    qpy.wait_status(job)
    assert out(qpy, job) == "original\n"


def test_original_option_wins_over_copy_scripts_setting(qpy):
    qpy.run("config", "copyScripts", "true")
    assert _paused_then_edited(qpy, "-o") == "modified\n"


def test_copy_scripts_setting_copies_by_default(qpy):
    qpy.run("config", "copyScripts", "true")
    assert _paused_then_edited(qpy) == "original\n"


# --- refusals ---------------------------------------------------------------------------


def _assert_refused(qpy, proc, *names: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert lines[0].startswith("qpy:"), proc.stderr
    for name in names:
        assert name.lower() in lines[0].lower(), (name, proc.stderr)
    # Nothing was queued, and the master still serves.
    assert qpy.jobs() == []
    job, record = finished(qpy, "true")
    assert record["exit_code"] == 0


BAD_OPTIONS = [
    (["-n", "abc"], ["abc"]),
    (["-n", "0"], ["cores", "0"]),
    (["-n", "-2"], ["cores", "-2"]),
    (["-m", "abc"], ["abc"]),
    (["-m", "0"], ["memory", "0"]),
    (["-m", "-1"], ["memory", "-1"]),
    (["-m", "nan"], ["nan"]),
    (["-m", "inf"], ["inf"]),
    (["-a", "big or"], ["big or"]),
    (["-a", "(a"], ["(a"]),
    (["-a", ""], ["attribute"]),
    (["--bogus", "x"], ["--bogus"]),
]


@pytest.mark.parametrize("options,names", BAD_OPTIONS,
                         ids=[" ".join(o) or "empty" for o, _ in BAD_OPTIONS])
def test_bad_option_refused(qpy, options, names):
    _assert_refused(qpy, qpy.run("sub", *options, "true", check=False), *names)


@pytest.mark.parametrize(("words", "why"), [
    (["./missing.sh"], "no such file"),
    (["./missing.sh", "arg"], "no such file"),
    (["sub/missing.sh --flag > log"], "no such file"),
    (["./plain.txt"], "not executable"),
    (["./adir"], "it is a directory"),
])
def test_a_script_path_that_cannot_run_is_refused(qpy, words, why):
    (qpy.work / "adir").mkdir()
    script(qpy.work / "plain.txt", "echo hi\n", executable=False)
    proc = qpy.run("sub", *words, check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    path = words[0].split()[0]
    assert proc.stderr.startswith(f"qpy: cannot run {path!r}: {why}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not (qpy.home / "jobs.db").exists() or qpy.jobs() == []


@pytest.mark.parametrize("words", [
    ["echo hi"], ["cd sub && ./run.sh"], ["./run.sh;true"], ["$HOME/missing"],
    ["bash", "./run.sh"], ["FOO=1 ./missing"], ["sub/run.sh"], ["./run.sh", "x"],
])
def test_shell_lines_and_runnable_paths_are_accepted(qpy, words):
    (qpy.work / "sub").mkdir()
    script(qpy.work / "sub" / "run.sh", "#!/bin/sh\necho ran\n")
    script(qpy.work / "run.sh", "#!/bin/sh\necho ran\n")
    assert qpy.run("sub", *words).stdout.endswith("received.\n")


def test_no_command_refused(qpy):
    _assert_refused(qpy, qpy.run("sub", check=False), "command")


def test_blank_command_refused(qpy):
    _assert_refused(qpy, qpy.run("sub", "   ", check=False), "command")


def test_unknown_directive_refused_naming_file_and_line(qpy):
    path = script(qpy.work / "job.sh", "#!/bin/sh\n#QPY n_cores=1\n#QPY foo=1\ntrue\n")
    proc = qpy.run("sub", "./job.sh", check=False)
    _assert_refused(qpy, proc, f"{os.path.realpath(path)}:3", "foo")


def test_bad_directive_value_refused(qpy):
    path = script(qpy.work / "job.sh", "#!/bin/sh\n#QPY n_cores=x\ntrue\n")
    proc = qpy.run("sub", "./job.sh", check=False)
    _assert_refused(qpy, proc, f"{os.path.realpath(path)}:2", "n_cores", "'x'")


# A request no node can ever satisfy is refused at once, whether the ``sub`` is the command
# that starts the master (a user's very first command) or the master was already running.
START = pytest.mark.parametrize("master_running", [False, True],
                                ids=["sub-starts-master", "master-running"])


def _start(qpy, master_running: bool) -> None:
    if master_running:  # and connected to the multiuser, so it knows the nodes
        wait_for(lambda: qpy.run("status", check=False).returncode == 0,
                 what="the master to reach the multiuser")


@START
def test_more_cores_than_any_node_refused(qpy, master_running):
    _start(qpy, master_running)
    proc = qpy.run("sub", "-n", "10000", "true", check=False)
    _assert_refused(qpy, proc, "10000", "largest node", NODE)


@START
def test_more_memory_than_any_node_refused(qpy, master_running):
    _start(qpy, master_running)
    proc = qpy.run("sub", "-m", "100000", "true", check=False)
    _assert_refused(qpy, proc, "100000", "largest node", NODE)


@START
def test_attribute_no_node_has_refused(qpy, master_running):
    _start(qpy, master_running)
    proc = qpy.run("sub", "-a", "no_such_attribute_xyz", "true", check=False)
    _assert_refused(qpy, proc, "no_such_attribute_xyz")
