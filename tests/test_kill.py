"""``qpy kill``: queued jobs become undone, running jobs and their whole trees die.

The embedded multiuser gives this machine's cores to the user, so with one-core jobs at most
that many run at once; the tests fill the cores with *gated* jobs (they wait for a file
``go_<ID>``) so that later jobs wait in the queue for as long as the test needs. Job
processes are found through /proc by their command line and by the ``QPY_HOME`` of this
test, which every job inherits from the submitting environment.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import assert_one_line_error, job_processes, pid_alive, wait_for

CORES = len(os.sched_getaffinity(0))
GATED = ("echo $QPY_JOB_ID >> ran_$QPY_JOB_ID; touch started_$QPY_JOB_ID; "
         "while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done; exit $((10 + QPY_JOB_ID))")


def marker_procs(qpy, *argv: str) -> list[int]:
    """Processes of this test's jobs whose command line is exactly ``argv``."""
    wanted = [a.encode() for a in argv]
    return job_processes(qpy, lambda cmd, env: cmd == wanted)


def job_procs(qpy, job_id: int) -> list[int]:
    """Every live process of job ``job_id`` (they all carry its QPY_JOB_ID)."""
    tag = f"QPY_JOB_ID={job_id}".encode()
    return job_processes(qpy, lambda cmd, env: tag in env)


def started(qpy, job_id: int) -> Path:
    return qpy.work / f"started_{job_id}"


def submit_gated(qpy, count: int) -> list[int]:
    return [qpy.sub("sh", "-c", GATED) for _ in range(count)]


def fill_cores(qpy) -> list[int]:
    """Submit one gated job per core and wait until all of them run."""
    ids = submit_gated(qpy, CORES)
    for job_id in ids:
        wait_for(started(qpy, job_id).exists, what=f"job {job_id} to start")
    return ids


def release(qpy, *ids: int) -> None:
    for job_id in ids:
        (qpy.work / f"go_{job_id}").touch()


def n_jobs(n: int) -> str:
    return f"{n} job{'' if n == 1 else 's'}"


# -- queued jobs ---------------------------------------------------------------------------


def test_kill_queued_job_makes_it_undone(qpy):
    running = fill_cores(qpy)
    queued = qpy.sub("sh", "-c", GATED)
    assert qpy.job(queued)["status"] == "queue"

    proc = qpy.run("kill", str(queued))
    assert proc.stdout == "1 job removed from the queue.\n"
    record = qpy.job(queued)
    assert record["status"] == "undone"
    assert record["t_start"] is None
    assert record["t_end"] is not None
    assert record["exit_code"] is None and record["signal"] is None

    release(qpy, *running)
    for job_id in running:
        assert qpy.wait_status(job_id)["status"] == "done"
    # the cores were free afterwards and the job still never ran
    assert qpy.job(queued)["status"] == "undone"
    assert not started(qpy, queued).exists()


# -- running jobs --------------------------------------------------------------------------


def test_kill_running_job_records_signal(qpy):
    job = qpy.sub("sh", "-c", "touch started_$QPY_JOB_ID; exec sleep 3141")
    wait_for(lambda: marker_procs(qpy, "sleep", "3141"), what="the job's sleep")
    pids = marker_procs(qpy, "sleep", "3141")

    proc = qpy.run("kill", str(job))
    assert proc.stdout == "1 job will be killed.\n"
    record = qpy.wait_status(job, "killed", "done", "undone")
    assert record["status"] == "killed"
    assert record["signal"] == signal.SIGTERM
    assert record["exit_code"] is None
    assert record["t_end"] is not None
    assert not any(pid_alive(pid) for pid in pids)


def test_kill_ends_the_whole_process_tree(qpy):
    command = ("sleep 9001 & (sleep 9002 &); setsid sleep 9004 & "
               "sh -c 'sleep 9006; exit 0' & sleep 9003")
    job = qpy.sub("sh", "-c", command)
    markers = ("9001", "9002", "9003", "9004", "9006")

    def all_up():
        found = {m: marker_procs(qpy, "sleep", m) for m in markers}
        return found if all(found.values()) else None

    found = wait_for(all_up, what="all the job's processes")
    pids = [pid for group in found.values() for pid in group]
    setsid_pid = found["9004"][0]
    assert os.getsid(setsid_pid) == setsid_pid  # it really left the job's session
    assert os.getsid(found["9001"][0]) != setsid_pid

    assert qpy.run("kill", str(job)).stdout == "1 job will be killed.\n"
    record = qpy.wait_status(job, "killed", "done", "undone")
    assert record["status"] == "killed"
    assert record["signal"] == signal.SIGTERM
    alive = [pid for pid in pids if pid_alive(pid)]
    assert alive == [], f"left alive after kill: {alive}"
    assert job_procs(qpy, job) == []


def test_kill_ends_background_child_that_ignores_sigterm(qpy):
    job = qpy.sub("sh", "-c", "(trap '' TERM; exec sleep 9007) & sleep 9008")
    wait_for(lambda: marker_procs(qpy, "sleep", "9007") and marker_procs(qpy, "sleep", "9008"),
             what="the job's processes")
    stubborn = marker_procs(qpy, "sleep", "9007")

    qpy.run("kill", str(job))
    record = qpy.wait_status(job, "killed", "done", "undone")
    assert record["status"] == "killed"
    assert record["signal"] == signal.SIGTERM
    assert not any(pid_alive(pid) for pid in stubborn)
    assert job_procs(qpy, job) == []


def test_job_ignoring_sigterm_is_killed_after_grace(qpy):
    qpy.run("config", "killGrace", "1")
    job = qpy.sub("trap '' TERM; sleep 9005")  # one word: the job's own shell ignores TERM
    wait_for(lambda: marker_procs(qpy, "sleep", "9005"), what="the job's sleep")
    pids = marker_procs(qpy, "sleep", "9005")

    assert qpy.run("kill", str(job)).stdout == "1 job will be killed.\n"
    record = qpy.wait_status(job, "killed", "done", "undone")
    assert record["status"] == "killed"
    assert record["signal"] == signal.SIGKILL
    assert record["exit_code"] is None
    assert not any(pid_alive(pid) for pid in pids)
    assert job_procs(qpy, job) == []


def test_argv_job_ignoring_sigterm_is_killed_after_grace(qpy):
    """The same job given as several words (``qpy sub sh -c ...``): the program still
    ignores SIGTERM, so it is ended by SIGKILL after the grace period."""
    qpy.run("config", "killGrace", "1")
    job = qpy.sub("sh", "-c", "trap '' TERM; sleep 9015")
    wait_for(lambda: marker_procs(qpy, "sleep", "9015"), what="the job's sleep")
    pids = marker_procs(qpy, "sleep", "9015")

    qpy.run("kill", str(job))
    record = qpy.wait_status(job, "killed", "done", "undone")
    assert record["status"] == "killed"
    assert not any(pid_alive(pid) for pid in pids)
    assert record["signal"] == signal.SIGKILL


def test_program_handling_sigterm_gets_the_grace_period(qpy):
    """A program that saves its state when asked to stop gets ``killGrace`` seconds for it
    (the manual: raise killGrace if programs need time to write their state)."""
    qpy.run("config", "killGrace", "30")
    saver = ('trap "sleep 0.5; echo saved > saved_$QPY_JOB_ID; exit 3" TERM; '
             'touch started_$QPY_JOB_ID; while :; do sleep 0.05; done')
    job = qpy.sub("sh", "-c", saver)
    wait_for(started(qpy, job).exists, what="the job to start")

    qpy.run("kill", str(job))
    assert qpy.wait_status(job, "killed", "done", "undone")["status"] == "killed"
    assert (qpy.work / f"saved_{job}").read_text() == "saved\n"
    assert job_procs(qpy, job) == []


def test_killing_frees_the_core_for_the_next_queued_job(qpy):
    running = fill_cores(qpy)
    waiting = qpy.sub("sh", "-c", GATED)
    assert qpy.job(waiting)["status"] == "queue"

    qpy.run("kill", str(running[0]))
    assert qpy.wait_status(running[0])["status"] == "killed"
    wait_for(started(qpy, waiting).exists, what="the queued job to start")
    assert qpy.job(waiting)["status"] == "running"
    for job_id in running[1:]:
        assert qpy.job(job_id)["status"] == "running"

    release(qpy, *running[1:], waiting)
    for job_id in [*running[1:], waiting]:
        record = qpy.wait_status(job_id)
        assert (record["status"], record["exit_code"]) == ("done", 10 + job_id)


# -- selections ----------------------------------------------------------------------------


@pytest.mark.skipif(CORES != 2, reason="the IDs in this test assume a 2-core machine")
def test_kill_by_range(qpy):
    ids = submit_gated(qpy, 4)
    assert ids == [1, 2, 3, 4]
    for job_id in (1, 2):
        wait_for(started(qpy, job_id).exists, what=f"job {job_id} to start")
    assert [qpy.job(i)["status"] for i in (3, 4)] == ["queue", "queue"]

    proc = qpy.run("kill", "1-3")
    assert proc.stdout == "1 job removed from the queue.\n2 jobs will be killed.\n"
    assert qpy.wait_status(1)["status"] == "killed"
    assert qpy.wait_status(2)["status"] == "killed"
    assert qpy.job(3)["status"] == "undone"

    wait_for(started(qpy, 4).exists, what="job 4 to start")  # outside the range: it runs
    release(qpy, 4)
    record = qpy.wait_status(4)
    assert (record["status"], record["exit_code"]) == ("done", 14)
    assert not started(qpy, 3).exists()


def test_kill_by_list(qpy):
    assert qpy.run("ctrlQueue", "pause").returncode == 0
    ids = [qpy.sub("sh", "-c", "touch started_$QPY_JOB_ID") for _ in range(3)]
    assert ids == [1, 2, 3]

    proc = qpy.run("kill", "1,3")
    assert proc.stdout == "2 jobs removed from the queue.\n"
    assert [qpy.job(i)["status"] for i in ids] == ["undone", "queue", "undone"]

    qpy.run("ctrlQueue", "continue")
    assert qpy.wait_status(2)["status"] == "done"
    assert started(qpy, 2).exists()
    assert not started(qpy, 1).exists() and not started(qpy, 3).exists()


def test_kill_running_then_queue(qpy):
    running = fill_cores(qpy)
    qpy.run("ctrlQueue", "pause")
    queued = submit_gated(qpy, 2)

    proc = qpy.run("kill", "running")
    assert proc.stdout == f"{n_jobs(CORES)} will be killed.\n"
    for job_id in running:
        assert qpy.wait_status(job_id)["status"] == "killed"
    assert [qpy.job(i)["status"] for i in queued] == ["queue", "queue"]

    proc = qpy.run("kill", "queue")
    assert proc.stdout == "2 jobs removed from the queue.\n"
    assert [qpy.job(i)["status"] for i in queued] == ["undone", "undone"]
    assert not any(started(qpy, i).exists() for i in queued)


def test_kill_all(qpy):
    running = fill_cores(qpy)
    queued = submit_gated(qpy, 2)
    pids = [pid for job_id in running for pid in job_procs(qpy, job_id)]
    assert pids

    proc = qpy.run("kill", "all")
    assert proc.stdout == f"2 jobs removed from the queue.\n{n_jobs(CORES)} will be killed.\n"
    jobs = qpy.wait_all_finished()
    status = {j["id"]: j["status"] for j in jobs}
    assert status == {**{i: "killed" for i in running}, **{i: "undone" for i in queued}}
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(started(qpy, i).exists() for i in queued)
    assert qpy.run("kill", "all", check=False).returncode != 0  # nothing left to kill


# -- refusals ------------------------------------------------------------------------------


def test_kill_unknown_job_is_an_error(qpy):
    proc = qpy.run("kill", "999", check=False)
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")


def test_kill_finished_job_is_an_error(qpy):
    job = qpy.sub("true")
    assert qpy.wait_status(job)["status"] == "done"
    proc = qpy.run("kill", str(job), check=False)
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    assert qpy.job(job)["status"] == "done"


@pytest.mark.parametrize("args", [(), ("abc",), ("done",), ("0",), ("3-1",), ("1,,2",)],
                         ids=["none", "word", "finished-status", "zero", "reversed", "empty"])
def test_kill_bad_arguments(qpy, args):
    job = qpy.sub("sh", "-c", "touch started_$QPY_JOB_ID; exec sleep 3142")
    wait_for(started(qpy, job).exists, what="the job to start")
    master = qpy.pid("master")

    proc = qpy.run("kill", *args, check=False)
    assert_one_line_error(proc)

    # nothing was killed and the same master still serves
    assert qpy.job(job)["status"] == "running"
    assert qpy.pid("master") == master
    qpy.run("kill", str(job))
    assert qpy.wait_status(job)["status"] == "killed"
