"""``qpy wait``: blocks until the selected jobs have ended (an event from the master),
prints one line per job that did not end done with exit 0, exits 0, 1, 2 on timeout (the
jobs go on) or 3 when nothing matches; keeps waiting across a SIGKILL of the master.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import QPY, WAIT, assert_one_line_error, pid_alive, wait_for

GATED = ("touch started_$QPY_JOB_ID; while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done; "
         "exit ${CODE:-0}")


def gated(qpy, code: int = 0, *options: str) -> int:
    return qpy.sub(*options, "sh", "-c", GATED.replace("${CODE:-0}", str(code)))


def started(qpy, job: int) -> None:
    wait_for(lambda: (qpy.work / f"started_{job}").exists(), what=f"job {job} to start")


def release(qpy, job: int) -> None:
    (qpy.work / f"go_{job}").touch()


def waiting(qpy, *args: str) -> subprocess.Popen:
    """``qpy wait ARGS`` in the background."""
    return subprocess.Popen([QPY, "wait", *args], cwd=qpy.work, env=qpy.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


def test_jobs_that_end_well_print_nothing_and_exit_0(qpy):
    jobs = [gated(qpy), gated(qpy)]
    proc = waiting(qpy, *map(str, jobs))
    for job in jobs:
        started(qpy, job)
    assert proc.poll() is None  # still waiting for both
    release(qpy, jobs[0])
    qpy.wait_status(jobs[0])
    assert proc.poll() is None  # one is not enough
    release(qpy, jobs[1])
    assert finish(proc) == (0, "", "")


def test_each_job_that_did_not_end_well_has_its_line_and_exit_1(qpy):
    qpy.run("config", "killGrace", "0")
    ok = qpy.sub("true")
    qpy.wait_status(ok)
    bad, killed = gated(qpy, 3), gated(qpy)  # one core each: this machine has two
    qpy.run("ctrlQueue", "pause")
    undone = qpy.sub("true")
    proc = waiting(qpy, f"{ok}-{undone}")
    for job in (bad, killed):
        started(qpy, job)
    qpy.run("kill", str(undone))
    qpy.run("kill", str(killed))
    release(qpy, bad)
    code, out, err = finish(proc)
    assert (code, err) == (1, "")
    assert out == (f"job {bad} done, exit 3\njob {killed} killed, signal 15\n"
                   f"job {undone} undone\n")


def test_a_time_limit_end_says_so(qpy):
    job = qpy.sub("-t", "0:1", "sleep", "300")
    proc = qpy.run("wait", str(job), check=False)
    assert (proc.returncode, proc.stdout) == (1, f"job {job} killed, signal 15: "
                                                 "time limit 00:00:01\n")


def test_timeout_exits_2_and_the_jobs_go_on(qpy):
    job = gated(qpy)
    started(qpy, job)
    proc = qpy.run("wait", str(job), "--timeout", "0.2", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert_one_line_error(proc, "timed out after 0.2 s: 1 job not ended yet")
    assert qpy.job(job)["status"] == "running"
    release(qpy, job)
    assert qpy.run("wait", str(job), "--timeout", "60").returncode == 0


def test_jobs_already_ended_count_at_once(qpy):
    job = qpy.sub("sh", "-c", "exit 4")
    qpy.wait_status(job)
    proc = qpy.run("wait", "done", check=False)
    assert (proc.returncode, proc.stdout) == (1, f"job {job} done, exit 4\n")
    assert qpy.run("wait", "all", "--timeout", "0", check=False).returncode == 1


@pytest.mark.parametrize("args,code,text", [
    (("7",), 3, "Nothing to do: required jobs not found."),
    (("running",), 3, "Nothing to do: required jobs not found."),
    (("1", "9"), 3, "job 9 not found"),
    ((), 2, "wait needs job IDs, ranges, a status or 'all'"),
    (("1", "--timeout", "-1"), 2, "--timeout must be a number of seconds >= 0, not -1"),
])
def test_a_selection_that_matches_nothing_is_an_error(qpy, args, code, text):
    qpy.wait_status(qpy.sub("true"))
    proc = qpy.run("wait", *args, check=False)
    assert proc.returncode == code
    assert_one_line_error(proc, text)


def test_wait_keeps_waiting_across_a_sigkill_of_the_master(qpy):
    """The master dies while ``wait`` is blocked in it; ``wait`` reconnects, starting a new
    master, and returns when the job ends under that one, with its exit code."""
    job = gated(qpy, 5)
    started(qpy, job)
    proc = waiting(qpy, str(job))
    wait_for(lambda: _connected(proc.pid), what="wait to be connected to the master")
    old = qpy.kill_daemon("master")
    new = wait_for(lambda: qpy.pid("master"), what="wait to start a new master")
    assert new != old
    assert proc.poll() is None  # it goes on waiting
    release(qpy, job)
    assert finish(proc) == (1, f"job {job} done, exit 5\n", "")


def test_wait_across_a_master_killed_while_the_job_ends(qpy):
    """The job ends while no master runs; the next master finds its end, and the wait
    that was blocked returns with it."""
    job = gated(qpy)
    started(qpy, job)
    proc = waiting(qpy, str(job))
    wait_for(lambda: _connected(proc.pid), what="wait to be connected to the master")
    master = qpy.pid("master")
    os.kill(master, signal.SIGSTOP)  # it cannot record the end, nor serve wait again
    try:
        release(qpy, job)
        wait_for(lambda: _job_gone(qpy, job), what="the job to end")
    finally:
        os.kill(master, signal.SIGKILL)
    wait_for(lambda: not pid_alive(master), what="the master to die")
    assert finish(proc) == (0, "", "")
    assert qpy.job(job)["status"] == "done"


def _job_gone(qpy, job: int) -> bool:
    """No process of the job is left."""
    from conftest import job_processes

    tag = f"QPY_JOB_ID={job}".encode()
    return not job_processes(qpy, lambda argv, env: tag in env)


def _connected(pid: int) -> bool:
    """Whether the process holds a connected Unix socket (its request to the master)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return any(link.startswith("socket:") for link in links)
