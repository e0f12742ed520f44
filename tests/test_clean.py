"""``qpy clean``: forget finished jobs (and only those); IDs are never given out again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import assert_one_line_error, wait_for

CORES = len(os.sched_getaffinity(0))
GATED = ("touch started_$QPY_JOB_ID; while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done; "
         "exit $((10 + QPY_JOB_ID))")


def ids(qpy, *selection: str) -> list[int]:
    return [j["id"] for j in qpy.jobs(*selection)]


def statuses(qpy) -> dict[int, str]:
    return {j["id"]: j["status"] for j in qpy.jobs()}


def finished(qpy, command: str = "true", cwd: Path | None = None) -> int:
    job = qpy.sub("sh", "-c", command, cwd=cwd)
    qpy.wait_status(job)
    return job


def make_killed(qpy) -> int:
    job = qpy.sub("sh", "-c", "touch started_$QPY_JOB_ID; exec sleep 2718")
    wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
    qpy.run("kill", str(job))
    assert qpy.wait_status(job)["status"] == "killed"
    return job


def make_undone(qpy) -> int:
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("true")
    qpy.run("kill", str(job))
    qpy.run("ctrlQueue", "continue")
    assert qpy.job(job)["status"] == "undone"
    return job


def test_clean_one_job_singular(qpy):
    job = finished(qpy)
    other = finished(qpy)
    proc = qpy.run("clean", str(job))
    assert proc.stdout == "1 finished job removed.\n"
    assert ids(qpy) == [other]


def test_clean_range_plural(qpy):
    jobs = [finished(qpy) for _ in range(3)]
    proc = qpy.run("clean", f"{jobs[0]}-{jobs[1]}")
    assert proc.stdout == "2 finished jobs removed.\n"
    assert ids(qpy) == [jobs[2]]


def test_clean_list_of_ids(qpy):
    jobs = [finished(qpy) for _ in range(3)]
    proc = qpy.run("clean", f"{jobs[0]},{jobs[2]}")
    assert proc.stdout == "2 finished jobs removed.\n"
    assert ids(qpy) == [jobs[1]]


def test_clean_never_removes_running_or_queued_jobs(qpy):
    done = finished(qpy)
    running = [qpy.sub("sh", "-c", GATED) for _ in range(CORES)]
    for job in running:
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
    queued = qpy.sub("sh", "-c", GATED)
    assert qpy.job(queued)["status"] == "queue"

    # an explicit ID or range naming live jobs does not touch them
    for selection in ([str(running[0])], [str(queued)], [f"{running[0]}-{queued}"]):
        proc = qpy.run("clean", *selection, check=False)
        assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    assert qpy.run("clean", "all").stdout == "1 finished job removed.\n"

    left = statuses(qpy)
    assert done not in left
    assert left == {**{j: "running" for j in running}, queued: "queue"}

    for job in [*running, queued]:
        (qpy.work / f"go_{job}").touch()
    for job in [*running, queued]:
        record = qpy.wait_status(job)
        assert (record["status"], record["exit_code"]) == ("done", 10 + job)


def test_clean_by_status(qpy):
    done = finished(qpy)
    killed = make_killed(qpy)
    undone = make_undone(qpy)
    assert statuses(qpy) == {done: "done", killed: "killed", undone: "undone"}

    assert qpy.run("clean", "killed").stdout == "1 finished job removed.\n"
    assert ids(qpy) == [done, undone]
    assert qpy.run("clean", "undone").stdout == "1 finished job removed.\n"
    assert ids(qpy) == [done]
    assert qpy.run("clean", "done").stdout == "1 finished job removed.\n"
    assert ids(qpy) == []


def test_clean_several_statuses_at_once(qpy):
    done = finished(qpy)
    killed = make_killed(qpy)
    undone = make_undone(qpy)
    assert qpy.run("clean", "undone", "killed").stdout == "2 finished jobs removed.\n"
    assert ids(qpy) == [done]
    assert killed not in ids(qpy) and undone not in ids(qpy)


def test_clean_by_directory(qpy):
    a, b = qpy.work / "a", qpy.work / "b"
    a.mkdir()
    b.mkdir()
    in_a = [finished(qpy, cwd=a) for _ in range(2)]
    in_b = finished(qpy, cwd=b)
    in_work = finished(qpy)

    assert qpy.run("clean", "a").stdout == "2 finished jobs removed.\n"
    assert ids(qpy) == [in_b, in_work]
    assert not set(in_a) & set(ids(qpy))

    # '.' is the directory qpy is run from; subdirectories are not included
    assert qpy.run("clean", ".", cwd=b).stdout == "1 finished job removed.\n"
    assert ids(qpy) == [in_work]
    assert qpy.run("clean", str(qpy.work)).stdout == "1 finished job removed.\n"
    assert ids(qpy) == []


def test_clean_all_removes_every_finished_job(qpy):
    jobs = [finished(qpy), make_killed(qpy), make_undone(qpy)]
    assert qpy.run("clean", "all").stdout == "3 finished jobs removed.\n"
    assert qpy.jobs() == []
    assert not set(jobs) & set(ids(qpy))


@pytest.mark.parametrize("word", ["queue", "running"])
def test_clean_live_status_is_an_error(qpy, word):
    job = finished(qpy)
    master = qpy.pid("master")
    proc = qpy.run("clean", word, check=False)
    assert_one_line_error(proc)
    assert word in proc.stderr
    assert ids(qpy) == [job]
    assert qpy.pid("master") == master


@pytest.mark.parametrize("args", [(), ("abc",), ("0",), ("2-1",)],
                         ids=["none", "word", "zero", "reversed"])
def test_clean_bad_arguments(qpy, args):
    job = finished(qpy)
    proc = qpy.run("clean", *args, check=False)
    assert_one_line_error(proc)
    assert ids(qpy) == [job]


def test_clean_nothing_matching_is_an_error(qpy):
    proc = qpy.run("clean", "999", check=False)
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    job = finished(qpy)
    for args in (["999"], ["killed"], ["undone"], ["998", "999"]):
        proc = qpy.run("clean", *args, check=False)
        assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    assert ids(qpy) == [job]
    qpy.run("clean", "all")
    proc = qpy.run("clean", "all", check=False)  # already empty
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")


def test_ids_are_never_reused_after_clean(qpy):
    first = [finished(qpy) for _ in range(2)]
    assert qpy.run("clean", "all").stdout == "2 finished jobs removed.\n"
    again = qpy.sub("true")
    assert again > max(first)
    qpy.wait_status(again)

    # not even by a new master that starts from the store
    qpy.run("clean", "all")
    qpy.run("restart")
    latest = qpy.sub("true")
    assert latest > again
    assert qpy.wait_status(latest)["status"] == "done"


def test_clean_leaves_output_files(qpy):
    job = finished(qpy, "echo out-$QPY_JOB_ID; echo err-$QPY_JOB_ID >&2")
    out, err = qpy.work / f"job_{job}.out", qpy.work / f"job_{job}.err"
    assert out.read_text() == f"out-{job}\n"
    qpy.run("clean", str(job))
    assert ids(qpy) == []
    assert out.read_text() == f"out-{job}\n"
    assert err.read_text() == f"err-{job}\n"
