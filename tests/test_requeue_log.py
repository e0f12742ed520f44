"""``qpy requeue`` (finished jobs run again under the same ID, command, directory,
resources and options; output afresh; earlier runs kept in history; live jobs refused) and
``qpy log`` (output, --err, -n, -f until the job ends, exiting as wait does)."""

from __future__ import annotations

import os
import subprocess

from conftest import QPY, WAIT, assert_one_line_error, json_payload, wait_for

# The first run prints "first" and waits to be killed; every later run prints "again".
TWICE = ("if [ -e ran ]; then echo again; echo err-again >&2; exit 0; fi; touch ran; "
         "echo first; echo err-first >&2; touch started; while :; do sleep 0.05; done")


def runs(qpy, *args: str) -> list[dict]:
    return json_payload(qpy.run("history", "--json", *args).stdout, "runs")


def test_requeue_of_a_killed_job(qpy):
    job = qpy.sub("-n", "2", "-m", "1.5", "-t", "10", "sh", "-c", TWICE)
    wait_for(lambda: (qpy.work / "started").exists(), what="the first run")
    qpy.run("notes", str(job), "kept")
    qpy.run("kill", str(job))
    first = qpy.wait_status(job)
    assert first["status"] == "killed"
    assert qpy.run("requeue", str(job)).stdout == "1 job queued again.\n"
    second = qpy.wait_status(job)
    assert (second["status"], second["exit_code"], second["reason"]) == ("done", 0, None)
    for name in ("id", "command", "cwd", "n_cores", "mem", "time_limit", "notes"):
        assert second[name] == first[name], name
    assert second["t_start"] > first["t_end"]
    assert (qpy.work / f"job_{job}.out").read_text() == "again\n"  # afresh
    assert (qpy.work / f"job_{job}.err").read_text() == "err-again\n"
    assert [(r["run"], r["status"]) for r in runs(qpy, str(job))] == \
        [(1, "killed"), (2, "done")]
    assert qpy.run("notes", str(job)).stdout.count("kept") == 1


def test_requeue_refuses_live_jobs_by_name_and_nothing_is_requeued(qpy):
    cores = str(len(os.sched_getaffinity(0)))
    record = ("-n", cores, "-m", "0.1", "sh", "-c", "echo $QPY_JOB_ID >> order")  # one by one
    done = qpy.sub(*record)
    qpy.wait_status(done)
    qpy.run("ctrlQueue", "pause")
    queued = qpy.sub(*record)
    proc = qpy.run("requeue", str(done), str(queued), check=False)
    assert proc.returncode == 1
    assert_one_line_error(proc, f"job {queued} is queue: only finished jobs (done, killed, "
                                "undone, lost) can be requeued")
    assert qpy.job(done)["status"] == "done"
    # a range or 'all' takes the finished jobs only
    assert qpy.run("requeue", "all").stdout == "1 job queued again.\n"
    assert qpy.job(done)["status"] == "queue"
    qpy.run("ctrlQueue", "continue")
    assert qpy.run("wait", "all").returncode == 0
    assert (qpy.work / "order").read_text() == f"{done}\n{queued}\n{done}\n"  # last, as new
    proc = qpy.run("requeue", "killed", check=False)
    assert proc.returncode == 3
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    proc = qpy.run("requeue", "queue", check=False)
    assert proc.returncode == 2 and "'queue' cannot be used here" in proc.stderr


def test_requeue_of_an_undone_job_and_of_a_script_copy(qpy):
    script = qpy.work / "job.sh"
    script.write_text("#!/bin/sh\necho copy\n")
    script.chmod(0o755)
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("-c", "./job.sh")
    qpy.run("kill", str(job))
    assert qpy.job(job)["status"] == "undone"
    script.write_text("#!/bin/sh\necho changed\n")
    qpy.run("requeue", "undone")
    qpy.run("ctrlQueue", "continue")
    assert qpy.wait_status(job)["exit_code"] == 0
    assert (qpy.work / f"job_{job}.out").read_text() == "copy\n"
    qpy.run("requeue", str(job))  # the copy is kept until clean, so it runs again
    assert qpy.wait_status(job)["exit_code"] == 0
    assert [r["status"] for r in runs(qpy, str(job))] == ["done", "done"]
    copies = list((qpy.home / "scripts").iterdir())
    assert len(copies) == 1
    qpy.run("clean", str(job))
    assert not copies[0].exists()


# -- log -----------------------------------------------------------------------------------


def test_log_prints_the_output_its_end_and_errors(qpy):
    job = qpy.sub("sh", "-c", "for i in 1 2 3 4; do echo line $i; done; echo oops >&2")
    qpy.wait_status(job)
    assert qpy.run("log", str(job)).stdout == "line 1\nline 2\nline 3\nline 4\n"
    assert qpy.run("log", str(job), "-n", "2").stdout == "line 3\nline 4\n"
    assert qpy.run("log", "--err", str(job)).stdout == "oops\n"
    assert qpy.run("log", "-n", "0", str(job)).stdout == ""
    proc = qpy.run("log", "99", check=False)
    assert proc.returncode == 3
    assert_one_line_error(proc, "job 99 not found")
    proc = qpy.run("log", "x", check=False)
    assert proc.returncode == 2
    qpy.run("ctrlQueue", "pause")
    queued = qpy.sub("true")
    proc = qpy.run("log", str(queued), check=False)
    assert proc.returncode == 1
    assert_one_line_error(proc)
    assert "has no output file" in proc.stderr


def test_log_follow_of_a_running_job(qpy):
    job = qpy.sub("sh", "-c", "echo one; while [ ! -e go ]; do sleep 0.05; done; "
                              "echo two; exit 6")
    follow = subprocess.Popen([QPY, "log", "-f", str(job)], cwd=qpy.work, env=qpy.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert follow.stdout.readline() == b"one\n"  # written while the job runs
        assert follow.poll() is None
        (qpy.work / "go").touch()
        out, err = follow.communicate(timeout=WAIT)
    finally:
        follow.kill()
        follow.wait()
    assert out == b"two\n"
    assert err == f"job {job} done, exit 6\n".encode()
    assert follow.returncode == 1  # as wait: it did not end done with exit 0
    ok = qpy.sub("echo", "fine")
    proc = qpy.run("log", "-f", str(ok))
    assert (proc.stdout, proc.stderr) == ("fine\n", f"job {ok} done, exit 0\n")
