"""``qpy ctrlQueue``: pause, continue and jump, checked against the order jobs really run in.

Jobs that ask for all of this machine's cores run one at a time, so the order in which they
append their IDs to ``order.txt`` is the order the queue gave them.
"""

from __future__ import annotations

import os

import pytest
from conftest import assert_one_line_error, wait_for

CORES = len(os.sched_getaffinity(0))
WHOLE = str(CORES)  # -n WHOLE: one job at a time
ORDER = "echo $QPY_JOB_ID >> order.txt"
GATED = ("touch started_$QPY_JOB_ID; while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done; "
         "exit $((10 + QPY_JOB_ID))")


def run_order(qpy) -> list[int]:
    qpy.wait_all_finished()
    path = qpy.work / "order.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def paused_queue(qpy, count: int = 6) -> list[int]:
    assert qpy.run("ctrlQueue", "pause").stdout == "Job submission paused.\n"
    return [qpy.sub("-n", WHOLE, "sh", "-c", ORDER) for _ in range(count)]


def is_paused(qpy) -> bool:
    text = qpy.run("check").stdout
    return text.endswith("Job submission is paused.\n")


# -- pause and continue --------------------------------------------------------------------


def test_pause_keeps_queued_jobs_waiting_and_continue_runs_them(qpy):
    running = [qpy.sub("sh", "-c", GATED) for _ in range(CORES)]
    for job in running:
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
    waiting = qpy.sub("sh", "-c", GATED)
    assert qpy.job(waiting)["status"] == "queue"

    assert qpy.run("ctrlQueue", "pause").stdout == "Job submission paused.\n"
    assert is_paused(qpy)
    # running jobs carry on and end normally; the cores they free are not used
    for job in running:
        (qpy.work / f"go_{job}").touch()
        record = qpy.wait_status(job)
        assert (record["status"], record["exit_code"]) == ("done", 10 + job)
        assert qpy.job(waiting)["status"] == "queue"
    later = qpy.sub("sh", "-c", GATED)  # a submission does not start anything either
    assert qpy.job(later)["status"] == "queue"
    assert qpy.job(waiting)["status"] == "queue"
    assert not (qpy.work / f"started_{waiting}").exists()
    assert not (qpy.work / f"started_{later}").exists()

    assert qpy.run("ctrlQueue", "continue").stdout == "Job submission continued.\n"
    assert not is_paused(qpy)
    for job in (waiting, later):
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
        (qpy.work / f"go_{job}").touch()
        record = qpy.wait_status(job)
        assert (record["status"], record["exit_code"]) == ("done", 10 + job)


def test_paused_queue_runs_in_submission_order_after_continue(qpy):
    jobs = paused_queue(qpy)
    assert [qpy.job(j)["status"] for j in jobs] == ["queue"] * 6
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == jobs


# -- jump ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, order", [
    (("5", "2"), [1, 2, 5, 3, 4, 6]),  # the manual's example
    (("6", "begin"), [6, 1, 2, 3, 4, 5]),
    (("1", "end"), [2, 3, 4, 5, 6, 1]),
    (("2", "end"), [1, 3, 4, 5, 6, 2]),
    (("6", "4", "begin"), [4, 6, 1, 2, 3, 5]),  # moved jobs keep their queue order
    (("3", "4", "5", "1"), [1, 3, 4, 5, 2, 6]),
    (("5", "3", "1"), [1, 3, 5, 2, 4, 6]),
    (("4-6", "begin"), [4, 5, 6, 1, 2, 3]),
    (("1,3", "6"), [2, 4, 5, 6, 1, 3]),
    (("99", "6", "begin"), [6, 1, 2, 3, 4, 5]),  # IDs not in the queue are left out
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_jump_changes_the_run_order(qpy, args, order):
    assert paused_queue(qpy) == [1, 2, 3, 4, 5, 6]
    proc = qpy.run("ctrlQueue", "jump", *args)
    assert proc.stdout == "Queue reordered.\n"
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == order


def test_successive_jumps_combine(qpy):
    paused_queue(qpy)
    qpy.run("ctrlQueue", "jump", "5", "2")  # 1 2 5 3 4 6
    qpy.run("ctrlQueue", "jump", "1", "end")  # 2 5 3 4 6 1
    qpy.run("ctrlQueue", "jump", "6", "5")  # 2 5 6 3 4 1
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == [2, 5, 6, 3, 4, 1]


def test_jump_refusals_leave_the_queue_alone(qpy):
    paused_queue(qpy)
    refusals = [
        (("2", "3", "2"), "Position is part of list: queue not reordered."),
        (("2", "99"), "Position not found: queue not reordered."),
        (("99", "1"), "List does not have jobs in queue: queue not reordered."),
        (("98", "99", "begin"), "List does not have jobs in queue: queue not reordered."),
        (("1-6", "begin"), "Queue is completely contained in list: queue not reordered."),
        (("1", "2", "3", "4", "5", "6", "end"),
         "Queue is completely contained in list: queue not reordered."),
    ]
    for args, text in refusals:
        proc = qpy.run("ctrlQueue", "jump", *args, check=False)
        assert_one_line_error(proc, text)
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == [1, 2, 3, 4, 5, 6]


def test_jump_only_moves_queued_jobs(qpy):
    blocker = qpy.sub("-n", WHOLE, "sh", "-c", GATED)
    wait_for((qpy.work / f"started_{blocker}").exists, what="the first job to start")
    qpy.run("ctrlQueue", "pause")
    queued = [qpy.sub("-n", WHOLE, "sh", "-c", ORDER) for _ in range(3)]
    done = qpy.sub("true")  # a one-core job cannot run either: the machine is full
    assert qpy.job(done)["status"] == "queue"
    qpy.run("kill", str(done))

    # the running job and the finished one are not in the queue
    proc = qpy.run("ctrlQueue", "jump", str(blocker), "begin", check=False)
    assert_one_line_error(proc, "List does not have jobs in queue: queue not reordered.")
    proc = qpy.run("ctrlQueue", "jump", str(done), "begin", check=False)
    assert_one_line_error(proc, "List does not have jobs in queue: queue not reordered.")
    proc = qpy.run("ctrlQueue", "jump", str(queued[0]), str(blocker), check=False)
    assert_one_line_error(proc, "Position not found: queue not reordered.")
    proc = qpy.run("ctrlQueue", "jump", str(queued[0]), str(done), check=False)
    assert_one_line_error(proc, "Position not found: queue not reordered.")
    # a mixed list moves its queued jobs only
    proc = qpy.run("ctrlQueue", "jump", str(blocker), str(queued[2]), "begin")
    assert proc.stdout == "Queue reordered.\n"

    assert qpy.job(blocker)["status"] == "running"
    qpy.run("ctrlQueue", "continue")
    (qpy.work / f"go_{blocker}").touch()
    assert run_order(qpy) == [queued[2], queued[0], queued[1]]
    assert qpy.job(blocker)["exit_code"] == 10 + blocker


def test_jump_requires_a_paused_queue(qpy):
    blocker = qpy.sub("-n", WHOLE, "sh", "-c", GATED)
    wait_for((qpy.work / f"started_{blocker}").exists, what="the first job to start")
    queued = [qpy.sub("-n", WHOLE, "sh", "-c", ORDER) for _ in range(3)]
    assert [qpy.job(j)["status"] for j in queued] == ["queue"] * 3

    for args in ([str(queued[2]), "begin"], [str(queued[0]), "end"],
                 [str(queued[2]), str(queued[0])]):
        proc = qpy.run("ctrlQueue", "jump", *args, check=False)
        assert_one_line_error(proc, "Pause the queue before trying to control it.")

    (qpy.work / f"go_{blocker}").touch()
    assert run_order(qpy) == queued


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    (), ("frob",), ("jump",), ("jump", "1"), ("jump", "1", "-5"), ("jump", "1", "x"),
    ("jump", "abc", "begin"), ("jump", "0", "begin"), ("pause", "extra"),
    ("continue", "extra")], ids=lambda a: " ".join(a) or "none")
def test_ctrlqueue_bad_arguments(qpy, args):
    paused_queue(qpy, 2)
    master = qpy.pid("master")
    proc = qpy.run("ctrlQueue", *args, check=False)
    assert_one_line_error(proc)
    # still paused, the same master serves, and the queue is untouched
    assert is_paused(qpy)
    assert qpy.pid("master") == master
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == [1, 2]


# -- persistence ---------------------------------------------------------------------------


def test_pause_and_order_survive_restart(qpy):
    jobs = paused_queue(qpy, 3)
    old = qpy.pid("master")
    qpy.run("restart")
    assert qpy.pid("master") != old
    assert is_paused(qpy)
    assert [qpy.job(j)["status"] for j in jobs] == ["queue"] * 3
    assert "Job submission is paused." in qpy.run("config").stdout
    # jump is only accepted while paused: the new master knows it is
    assert qpy.run("ctrlQueue", "jump", "3", "begin").stdout == "Queue reordered.\n"

    qpy.run("finish")
    assert qpy.pid("master") is None
    assert is_paused(qpy)  # started again by this command, still paused
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == [3, 1, 2]

    qpy.run("restart")
    assert not is_paused(qpy)
    assert qpy.wait_status(qpy.sub("true"))["status"] == "done"
