"""Job arrays (``sub --array``) and bulk files (``sub --file``) with real daemons: one
request, consecutive IDs, each task with its index, ``%MAX`` respected while tasks run,
every line of a file parsed as ``sub`` parses its options, and a bad line refusing the
whole file by its number.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import QPY, assert_one_line_error, start_daemons, wait_for
from test_dependencies import GATED, finish, started


def test_array_tasks_get_consecutive_ids_their_index_and_own_files(qpy):
    first = qpy.sub("-m", "0.1", "true")
    out = qpy.run("sub", "-m", "0.1", "--array", "3-11:4",
                  'echo "$QPY_ARRAY_INDEX $QPY_ARRAY_JOB_ID $QPY_JOB_ID"').stdout
    ids = [first + 1, first + 2, first + 3]
    assert out == f"Jobs {ids[0]}-{ids[-1]} received.\n"
    for job, index in zip(ids, (3, 7, 11), strict=True):
        record = qpy.wait_status(job)
        assert (record["status"], record["exit_code"]) == ("done", 0)
        assert (record["array_id"], record["array_index"]) == (ids[0], index)
        assert (qpy.work / f"job_{job}.out").read_text() == f"{index} {ids[0]} {job}\n"
    assert qpy.run("clean", f"{ids[0]}-{ids[-1]}").stdout == "3 finished jobs removed.\n"


def test_array_max_caps_the_tasks_running_at_once(qpy):
    """%1 on a machine with free cores: while a task runs, the next waits, and a job
    submitted after the array starts before it (the capped tasks block nobody)."""
    assert qpy.run("sub", "-m", "0.1", "--array", "1-3%1", "sh", "-c",
                   GATED).stdout == "Jobs 1-3 received.\n"
    for task in (1, 2, 3):
        wait_for(lambda t=task: started(qpy, t), what=f"task {task} to start")
        other = qpy.sub("-m", "0.1", "sh", "-c", GATED)  # a core is free for it
        wait_for(lambda o=other: started(qpy, o), what=f"job {other} to start")
        later = [t for t in (1, 2, 3) if t > task]
        assert not any(started(qpy, t) for t in later)
        assert [qpy.job(t)["status"] for t in later] == ["queue"] * len(later)
        for t in later:
            why = qpy.run("why", str(t)).stdout
            assert why == ("limit: array 1 runs at most 1 task at once (%1); 1 runs now "
                           "and 0 more go first\n"), why
        finish(qpy, other)
        assert finish(qpy, task)["status"] == "done"
    assert qpy.job(3)["array_max"] == 1


def test_array_kill_and_hold_work_on_the_id_range(qpy):
    qpy.run("ctrlQueue", "pause")
    assert qpy.run("sub", "--array", "0-9", "true").stdout == "Jobs 1-10 received.\n"
    assert qpy.run("hold", "1-5").stdout == "5 jobs held.\n"
    assert qpy.run("kill", "6-10").stdout == "5 jobs removed from the queue.\n"
    qpy.run("ctrlQueue", "continue")
    assert [j["id"] for j in qpy.jobs("held")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("spec", ["5", "1-", "3-1", "1-10:0", "1-10%0", "a-b",
                                  "1-200001", "-1-3"])
def test_bad_array_refused(qpy, spec):
    proc = qpy.run("sub", "--array", spec, "true", check=False)
    assert_one_line_error(proc)
    assert proc.returncode == 2 and "--array" in proc.stderr
    assert qpy.jobs() == []


# -- bulk files --------------------------------------------------------------------------------


BULK = """\
# a comment, then a blank line

true
-n 2 -m 1 sh -c 'echo "$QPY_N_CORES $QPY_MEM"'
   # an indented comment
--priority high echo "a  b" c
-c ./job.sh one # a comment after the words
"""


def test_bulk_file_one_request_line_options_and_defaults(qpy):
    script = qpy.work / "job.sh"
    script.write_text('#!/bin/sh\n#QPY n_cores=1\necho "script $1"\n')
    script.chmod(0o755)
    (qpy.work / "jobs.txt").write_text(BULK)
    qpy.run("ctrlQueue", "pause")
    out = qpy.run("sub", "-m", "0.5", "--file", "jobs.txt").stdout
    assert out == "Jobs 1-4 received.\n"
    jobs = {j["id"]: j for j in qpy.jobs()}
    assert [jobs[i]["command"] for i in (1, 2, 3, 4)] == [
        "true", "sh -c 'echo \"$QPY_N_CORES $QPY_MEM\"'", "echo 'a  b' c", "./job.sh one"]
    assert [(jobs[i]["n_cores"], jobs[i]["mem"]) for i in (1, 2, 3, 4)] == [
        (1, 0.5), (2, 1.0), (1, 0.5), (1, 0.5)]  # --file's -m is the default
    assert [jobs[i]["priority"] for i in (1, 2, 3, 4)] == [0, 0, 10, 0]
    assert [j["id"] for j in qpy.jobs("queue")] == [3, 1, 2, 4]
    script.write_text('#!/bin/sh\necho "changed $1"\n')  # line 4 runs its copy (-c)
    qpy.run("ctrlQueue", "continue")
    qpy.wait_all_finished()
    assert (qpy.work / "job_2.out").read_text() == "2 1\n"
    assert (qpy.work / "job_3.out").read_text() == "a  b c\n"
    assert (qpy.work / "job_4.out").read_text() == "script one\n"


def test_bulk_file_from_stdin(qpy):
    proc = subprocess.run([QPY, "sub", "-m", "0.1", "--file", "-"], cwd=qpy.work,
                          env=qpy.env, input="echo one\necho two\n", capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Jobs 1-2 received.\n", "")
    qpy.wait_all_finished()
    assert (qpy.work / "job_2.out").read_text() == "two\n"


@pytest.mark.parametrize(("line", "named"), [
    ("-n zero true", "-n"),
    ("--bogus true", "--bogus"),
    ("echo 'unclosed", "quotation"),
    ("-n 2", "no command"),
    ("--array 1-3 true", "--array"),
    ("--after 999 true", "dependency 999"),
    ("-n 100000 true", "largest node"),
    ("-a no_such_attribute_xyz true", "no_such_attribute_xyz"),
])
def test_a_bad_line_refuses_the_whole_file_naming_its_number(qpy, line, named):
    (qpy.work / "jobs.txt").write_text(f"true\n\n# three\n{line}\ntrue\n")
    proc = qpy.run("sub", "-m", "0.1", "--file", "jobs.txt", check=False)
    assert_one_line_error(proc)
    assert proc.stderr.startswith("qpy: jobs.txt:4: "), proc.stderr
    assert named in proc.stderr, proc.stderr
    assert qpy.jobs() == []  # nothing half-submitted
    assert qpy.sub("-m", "0.1", "true") == 1  # and no ID was used up


def test_bulk_refusals_of_the_whole_request(qpy):
    (qpy.work / "empty.txt").write_text("# nothing\n\n")
    for args, text in [
        (("--file", "empty.txt"), "empty.txt has no jobs: every line is blank or a comment"),
        (("--file", "missing.txt"), "--file: cannot read missing.txt: No such file or directory"),
        (("--file", "empty.txt", "true"), "give a command or --file, not both"),
        (("--file", "empty.txt", "--array", "1-2"), "--array and --file cannot be used together"),
    ]:
        proc = qpy.run("sub", *args, check=False)
        assert_one_line_error(proc, text)
        assert proc.returncode == 2


def test_sub_json_prints_the_new_records(qpy):
    qpy.run("ctrlQueue", "pause")
    data = json.loads(qpy.run("sub", "--json", "--array", "1-2", "--priority", "low",
                              "true").stdout)
    assert data["version"] == 1
    assert [(j["id"], j["status"], j["array_index"], j["priority"]) for j in data["jobs"]] \
        == [(1, "queue", 1, -10), (2, "queue", 2, -10)]
    data = json.loads(qpy.run("sub", "--json", "true").stdout)
    assert [j["id"] for j in data["jobs"]] == [3]


def test_a_failure_while_storing_takes_the_whole_file_back(qpy):
    """The scripts directory cannot be made: line 3's copy fails after lines 1 and 2
    were stored in the same transaction; all of it is taken back, in memory too."""
    qpy.run("status")  # the master runs and has made its home
    (qpy.home / "scripts").write_text("not a directory\n")
    script = qpy.work / "job.sh"
    script.write_text("#!/bin/sh\necho copied\n")
    script.chmod(0o755)
    (qpy.work / "jobs.txt").write_text("true\n--priority high true\n-c ./job.sh\n")
    proc = qpy.run("sub", "-m", "0.1", "--file", "jobs.txt", check=False)
    assert_one_line_error(proc)
    assert "cannot copy the script" in proc.stderr
    assert qpy.jobs() == []
    assert qpy.run("check", "queue", check=False).returncode == 3  # no job matches queue
    (qpy.home / "scripts").unlink()
    assert qpy.run("sub", "-m", "0.1", "--file", "jobs.txt").stdout == "Jobs 1-3 received.\n"
    assert [j["status"] for j in qpy.wait_all_finished()] == ["done"] * 3
    assert (qpy.work / "job_3.out").read_text() == "copied\n"


def test_a_requeued_array_task_keeps_its_max_after_a_master_restart(qpy):
    """The array has no live task when the master comes back, so its %MAX is not known
    until a task is requeued: it must be then (not a crash), and still cap the tasks."""
    start_daemons(qpy)
    assert qpy.run("sub", "-m", "0.1", "--array", "1-2%1", "sh", "-c",
                   GATED).stdout == "Jobs 1-2 received.\n"
    for task in (1, 2):
        finish(qpy, task)
    qpy.kill_daemon("master")
    for task in (1, 2):
        (qpy.work / f"started_{task}").unlink()
        (qpy.work / f"go_{task}").unlink()
    assert qpy.run("requeue", "1-2").stdout == "2 jobs queued again.\n"
    wait_for(lambda: started(qpy, 1), what="task 1 to start again")
    assert not started(qpy, 2) and qpy.job(2)["status"] == "queue"
    assert qpy.run("why", "2").stdout.startswith("limit: array 1 runs at most 1 task")
    finish(qpy, 1)
    assert finish(qpy, 2)["status"] == "done"


def test_a_long_file_of_short_jobs_runs_through_and_leaves_nothing_allocated(qpy):
    """300 short jobs on two cores: nearly every end hands its core straight to the next
    job (chaining, told to the multiuser in batches, some of whose jobs have ended again
    by then); all end done and the multiuser holds no core for any of them."""
    (qpy.work / "jobs.txt").write_text("true\n" * 300)
    assert qpy.run("sub", "-m", "0.1", "--file", "jobs.txt").stdout == \
        "Jobs 1-300 received.\n"
    assert qpy.run("wait", "--timeout", "300", "1-300").returncode == 0
    assert {j["status"] for j in qpy.jobs()} == {"done"}
    wait_for(lambda: [u["used"] for u in json.loads(qpy.run("status", "--json").stdout)
                      ["users"]] == [0], what="the multiuser to free every job's core")
