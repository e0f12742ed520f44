"""``qpy sub --after`` / ``--afterok`` with real daemons: dependents wait for their
dependencies' ends, a failed ``afterok`` undoes its chain with the reason, unknown and
cleaned IDs are refused at submission, and waiting dependents survive a master SIGKILL.

Jobs are gated: each creates ``started_<ID>`` and waits for ``go_<ID>``, then exits with
the code in ``code_<ID>`` (0 if there is none), so tests decide when and how jobs end.
"""

from __future__ import annotations

from conftest import assert_one_line_error, start_daemons, wait_for

GATED = ("touch started_$QPY_JOB_ID; while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done; "
         "exit $(cat code_$QPY_JOB_ID 2>/dev/null || echo 0)")


def gated(qpy, *options: str) -> int:
    return qpy.sub(*options, "-m", "0.1", "sh", "-c", GATED)


def started(qpy, job: int) -> bool:
    return (qpy.work / f"started_{job}").exists()


def finish(qpy, job: int, code: int = 0) -> dict:
    """Let a started gated job end with ``code``; its record once finished."""
    wait_for(lambda: started(qpy, job), what=f"job {job} to start")
    (qpy.work / f"code_{job}").write_text(str(code))
    (qpy.work / f"go_{job}").touch()
    return qpy.wait_status(job)


def test_after_waits_for_every_dependency_to_end_however_it_ends(qpy):
    a, b = gated(qpy), gated(qpy)
    c = gated(qpy, "--after", f"{a},{b}")
    assert qpy.job(c)["after"] == [a, b] and qpy.job(c)["afterok"] == []
    finish(qpy, a, 3)
    assert qpy.job(c)["status"] == "queue" and not started(qpy, c)
    wait_for(lambda: started(qpy, b), what="job b to start")
    qpy.run("kill", str(b))
    assert qpy.wait_status(b)["status"] == "killed"
    record = finish(qpy, c)  # it ran although a failed and b was killed
    assert (record["status"], record["exit_code"]) == ("done", 0)


def test_afterok_runs_after_success(qpy):
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    finish(qpy, a, 0)
    assert finish(qpy, b)["status"] == "done"


def test_a_failed_afterok_chain_is_undone_with_reasons_and_after_still_runs(qpy):
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    c = gated(qpy, "--afterok", str(b))
    d = gated(qpy, "--afterok", f"{c}")
    e = gated(qpy, "--after", str(b))  # b ends (undone): e runs
    finish(qpy, a, 3)
    for job, why in ((b, f"dependency {a} exited 3"), (c, f"dependency {b} ended undone"),
                     (d, f"dependency {c} ended undone")):
        record = qpy.wait_status(job)
        assert (record["status"], record["reason"]) == ("undone", why)
        assert record["t_start"] is None and not started(qpy, job)
    assert finish(qpy, e)["status"] == "done"


def test_afterok_on_a_killed_job_undoes_the_dependent(qpy):
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    wait_for(lambda: started(qpy, a), what="job a to start")
    qpy.run("kill", str(a))
    record = qpy.wait_status(b)
    assert (record["status"], record["reason"]) == ("undone", f"dependency {a} ended killed")


def test_killing_a_queued_dependency_resolves_its_dependents(qpy):
    qpy.run("ctrlQueue", "pause")
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    c = gated(qpy, "--after", str(a))
    assert qpy.run("kill", str(a)).stdout == "1 job removed from the queue.\n"
    assert qpy.job(b)["reason"] == f"dependency {a} ended undone"
    assert qpy.job(b)["status"] == "undone"
    assert qpy.job(c)["status"] == "queue"
    qpy.run("ctrlQueue", "continue")
    assert finish(qpy, c)["status"] == "done"


def test_afterok_on_a_job_that_already_failed_is_undone_at_once(qpy):
    a = gated(qpy)
    finish(qpy, a, 5)
    b = gated(qpy, "--afterok", str(a))
    record = qpy.job(b)
    assert (record["status"], record["reason"]) == ("undone", f"dependency {a} exited 5")
    c = gated(qpy, "--after", str(a))  # after: it ended, so c may run now
    assert finish(qpy, c)["status"] == "done"


def test_ids_take_ranges_and_lists(qpy):
    first = [gated(qpy) for _ in range(4)]
    last = gated(qpy, "--afterok", f"{first[0]}-{first[2]},{first[3]}")
    assert qpy.job(last)["afterok"] == first
    for job in first:
        finish(qpy, job)
        if job != first[-1]:
            assert qpy.job(last)["status"] == "queue"
    assert finish(qpy, last)["status"] == "done"


def test_unknown_and_cleaned_ids_are_refused_naming_them(qpy):
    a = gated(qpy)
    finish(qpy, a)
    qpy.run("clean", str(a))
    for option, ids, missing in (("--after", "99", 99), ("--afterok", f"{a}", a),
                                 ("--after", f"{a + 1}-{a + 5}", a + 1)):
        proc = qpy.run("sub", option, ids, "true", check=False)
        assert_one_line_error(proc, f"dependency {missing} is not a job of yours "
                                    "(unknown or cleaned)")
        assert proc.returncode == 3
    assert qpy.jobs() == []
    for bad in ("x", "0", "3-1", "1,,2", ""):
        proc = qpy.run("sub", "--after", bad, "true", check=False)
        assert proc.returncode == 2 and "--after" in proc.stderr, proc.stderr
    assert qpy.jobs() == []


def test_directives_after_and_afterok(qpy):
    a = gated(qpy)
    b = gated(qpy)
    script = qpy.work / "next.sh"
    script.write_text(f"#!/bin/sh\n#QPY after={a}; afterok = {b}\n#QPY mem=0.1\n"
                      "echo next\n")
    script.chmod(0o755)
    c = qpy.sub("./next.sh")
    assert (qpy.job(c)["after"], qpy.job(c)["afterok"]) == ([a], [b])
    d = qpy.sub("--afterok", str(a), "./next.sh")  # the option wins over the directive
    assert (qpy.job(d)["after"], qpy.job(d)["afterok"]) == ([], [a])  # afterok is stronger
    finish(qpy, a)
    assert qpy.wait_status(d)["status"] == "done"
    assert qpy.job(c)["status"] == "queue"
    finish(qpy, b, 1)
    assert qpy.wait_status(c)["reason"] == f"dependency {b} exited 1"


def test_waiting_dependents_survive_a_master_sigkill(qpy):
    start_daemons(qpy)
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    c = gated(qpy, "--afterok", str(b))
    d = gated(qpy, "--after", str(a))
    wait_for(lambda: started(qpy, a), what="job a to start")
    qpy.kill_daemon("master")
    assert [qpy.job(j)["status"] for j in (b, c, d)] == ["queue"] * 3  # a new master
    assert not started(qpy, d)
    finish(qpy, a, 2)
    assert qpy.wait_status(c)["reason"] == f"dependency {b} ended undone"
    assert qpy.job(b)["reason"] == f"dependency {a} exited 2"
    assert finish(qpy, d)["status"] == "done"


def rerun(qpy, *jobs: int) -> None:
    """Take away the gate files of gated jobs that ended, before they are requeued."""
    for job in jobs:
        for name in ("started", "go", "code"):
            (qpy.work / f"{name}_{job}").unlink(missing_ok=True)


def test_a_requeued_job_waits_again_for_its_dependencies_or_is_undone(qpy):
    a = gated(qpy)
    b = gated(qpy, "--afterok", str(a))
    finish(qpy, a, 3)
    assert qpy.wait_status(b)["reason"] == f"dependency {a} exited 3"
    rerun(qpy, a, b)
    assert qpy.run("requeue", str(b)).stdout == "1 job queued again.\n"  # a still failed
    record = qpy.job(b)
    assert (record["status"], record["reason"]) == ("undone", f"dependency {a} exited 3")
    assert qpy.run("requeue", f"{a},{b}").stdout == "2 jobs queued again.\n"
    wait_for(lambda: started(qpy, a), what="job a to start again")
    assert qpy.run("why", str(b)).stdout == f"waiting for dependency {a} (running, afterok)\n"
    finish(qpy, a)
    record = finish(qpy, b)
    assert (record["status"], record["exit_code"], record["reason"]) == ("done", 0, None)
