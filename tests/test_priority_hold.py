"""Priorities, the visible queue order, hold and release, and ``qpy why`` with real daemons.

Jobs that ask for all of this machine's cores run one at a time, so the order in which
they append their IDs to ``order.txt`` is the order the queue gave them.
"""

from __future__ import annotations

import json

from conftest import NODE, assert_one_line_error, start_daemons, wait_for
from test_ctrlqueue import CORES, ORDER, WHOLE, run_order
from test_dependencies import GATED, finish, started


def whole(qpy, *options: str) -> int:
    return qpy.sub("-n", WHOLE, "-m", "0.1", *options, "sh", "-c", ORDER)


def queue_ids(qpy) -> list[int]:
    return [j["id"] for j in qpy.jobs("queue")]


def test_priorities_order_the_queue_and_check_queue_shows_it(qpy):
    qpy.run("ctrlQueue", "pause")
    jobs = [whole(qpy), whole(qpy, "--priority", "high"), whole(qpy, "--priority", "low"),
            whole(qpy, "--priority", "5"), whole(qpy), whole(qpy, "--priority", "10"),
            whole(qpy, "--priority", "-3")]
    assert [qpy.job(j)["priority"] for j in jobs] == [0, 10, -10, 5, 0, 10, -3]
    expected = [2, 6, 4, 1, 5, 7, 3]
    assert queue_ids(qpy) == expected
    qpy.run("config", "checkFMT", "%P %j %s\\n")
    assert qpy.run("check", "queue").stdout == "".join(
        f"{n} {j} queue\n" for n, j in enumerate(expected, 1)) + "Job submission is paused.\n"
    assert [qpy.job(j)["position"] for j in expected] == list(range(1, 8))
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == expected
    assert qpy.job(1)["position"] is None
    assert qpy.run("check", "1").stdout == "- 1 done\n"


def test_priority_directive_and_bad_values(qpy):
    qpy.run("ctrlQueue", "pause")
    script = qpy.work / "urgent.sh"
    script.write_text("#!/bin/sh\n#QPY priority=high\ntrue\n")
    script.chmod(0o755)
    a = whole(qpy)
    b = qpy.sub("./urgent.sh")
    c = qpy.sub("--priority", "low", "./urgent.sh")  # the option wins
    assert [qpy.job(j)["priority"] for j in (a, b, c)] == [0, 10, -10]
    assert queue_ids(qpy) == [b, a, c]
    for bad in ("x", "1.5", "urgent", "2000000"):
        proc = qpy.run("sub", "--priority", bad, "true", check=False)
        assert_one_line_error(proc)
        assert proc.returncode == 2 and "--priority" in proc.stderr
    assert queue_ids(qpy) == [b, a, c]


def test_a_requeued_job_goes_where_a_new_job_of_its_priority_would(qpy):
    high = whole(qpy, "--priority", "high")
    low = whole(qpy, "--priority", "low")
    for job in (high, low):
        assert qpy.wait_status(job)["status"] == "done"
    qpy.run("ctrlQueue", "pause")
    normal = whole(qpy)
    assert qpy.run("requeue", f"{high},{low}").stdout == "2 jobs queued again.\n"
    assert queue_ids(qpy) == [high, normal, low]
    assert [j["position"] for j in qpy.jobs("queue")] == [1, 2, 3]

def test_jump_moves_explicitly_whatever_the_priority_and_order_survives_a_restart(qpy):
    start_daemons(qpy)
    qpy.run("ctrlQueue", "pause")
    low = whole(qpy, "--priority", "low")
    high = [whole(qpy, "--priority", "high") for _ in range(2)]
    assert qpy.run("ctrlQueue", "jump", str(low), "begin").stdout == "Queue reordered.\n"
    assert queue_ids(qpy) == [low, *high]
    late = whole(qpy, "--priority", "high")  # after the last high one, wherever it is
    normal = whole(qpy)
    assert queue_ids(qpy) == [low, *high, late, normal]
    qpy.kill_daemon("master")
    assert queue_ids(qpy) == [low, *high, late, normal]
    qpy.run("ctrlQueue", "continue")
    assert run_order(qpy) == [low, *high, late, normal]


def test_hold_keeps_a_job_queued_without_blocking_others_and_release_lets_it_go(qpy):
    qpy.run("ctrlQueue", "pause")
    a = qpy.sub("-m", "0.1", "sh", "-c", GATED)
    b = qpy.sub("-m", "0.1", "sh", "-c", GATED)
    assert qpy.run("hold", str(a)).stdout == "1 job held.\n"
    assert qpy.run("check", str(a)).stdout.startswith(f"{a} (queue, held):sh -c ")
    assert qpy.job(a)["held"] is True and qpy.job(b)["held"] is False
    assert [j["id"] for j in qpy.jobs("held")] == [a]
    qpy.run("ctrlQueue", "continue")
    finish(qpy, b)  # b, behind the held a, started and ended
    assert not started(qpy, a) and qpy.job(a)["status"] == "queue"
    assert qpy.run("why", str(a)).stdout == f"held: it starts only after 'qpy release {a}'\n"
    assert qpy.run("release", "held").stdout == "1 job released.\n"
    record = finish(qpy, a)
    assert (record["status"], record["held"]) == ("done", False)
    assert qpy.run("check", "held", check=False).returncode == 3  # no job matches held


def test_hold_and_release_refuse_jobs_not_queued_naming_them(qpy):
    a = qpy.sub("-m", "0.1", "sh", "-c", GATED)
    wait_for(lambda: started(qpy, a), what="job a to start")
    for command, verb in (("hold", "held"), ("release", "released")):
        proc = qpy.run(command, str(a), check=False)
        assert_one_line_error(proc, f"job {a} is running, not queued: only queued jobs "
                                    f"can be {verb}")
        assert proc.returncode == 1
    finish(qpy, a)
    proc = qpy.run("hold", str(a), check=False)
    assert_one_line_error(proc, f"job {a} is done, not queued: only queued jobs can be held")
    proc = qpy.run("hold", "queue", check=False)
    assert_one_line_error(proc, "Nothing to do: required jobs not found.")
    assert proc.returncode == 3
    proc = qpy.run("hold", "done", check=False)
    assert proc.returncode == 2 and "done" in proc.stderr


def test_holds_survive_a_master_restart_and_kill_takes_held_jobs(qpy):
    start_daemons(qpy)
    qpy.run("ctrlQueue", "pause")
    jobs = [qpy.sub("-m", "0.1", "true") for _ in range(3)]
    qpy.run("hold", f"{jobs[0]},{jobs[2]}")
    qpy.kill_daemon("master")
    assert [j["id"] for j in qpy.jobs("held")] == [jobs[0], jobs[2]]
    qpy.run("ctrlQueue", "continue")
    assert qpy.wait_status(jobs[1])["status"] == "done"
    assert qpy.run("kill", "held").stdout == "2 jobs removed from the queue.\n"
    assert [(j["status"], j["held"]) for j in qpy.jobs(str(jobs[0]), str(jobs[2]))] == [
        ("undone", False), ("undone", False)]


# -- why -------------------------------------------------------------------------------------


def why(qpy, job: int) -> dict:
    data = json.loads(qpy.run("why", "--json", str(job)).stdout)
    assert data["version"] == 1 and data["job"] == job
    return data


def test_why_in_order_of_precedence(qpy):
    start_daemons(qpy)
    a = qpy.sub("-m", "0.1", "sh", "-c", GATED)
    wait_for(lambda: started(qpy, a), what="job a to start")
    running = why(qpy, a)
    assert (running["status"], running["reason"]) == ("running", "running")
    assert running["text"].startswith(f"running on {NODE} since ")
    assert running["details"]["node"] == NODE
    assert running["details"]["since"].endswith("Z")  # ISO 8601 in UTC
    b = qpy.sub("-m", "0.1", "--after", str(a), "true")
    assert qpy.run("why", str(b)).stdout == \
        f"waiting for dependency {a} (running, after)\n"
    qpy.run("hold", str(b))
    qpy.run("ctrlQueue", "pause")
    assert why(qpy, b)["reason"] == "held"  # held before paused before the dependency
    qpy.run("release", str(b))
    assert why(qpy, b)["reason"] == "paused"
    qpy.run("ctrlQueue", "continue")
    data = why(qpy, b)
    assert (data["reason"], data["details"]["dependency"]) == ("dependency", a)
    finish(qpy, a, 4)
    qpy.wait_status(b)
    assert qpy.run("why", str(a)).stdout.startswith(f"done on {NODE} at ")
    assert qpy.run("why", str(a)).stdout.endswith(", exit code 4\n")


def test_why_names_the_closest_node_when_none_has_room(qpy):
    start_daemons(qpy)
    blocker = qpy.sub("-m", "0.1", "sh", "-c", GATED)
    wait_for(lambda: started(qpy, blocker), what="the blocker to start")
    big = qpy.sub("-n", WHOLE, "-m", "0.1", "true")
    data = why(qpy, big)
    assert data["reason"] == "nodes", data
    free = CORES - 1
    assert data["text"] == (
        f"no up node has {CORES} cores and 0.1 GB free now; the closest, {NODE}, has "
        f"{free} core{'' if free == 1 else 's'} and "
        f"{data['details']['closest']['free_mem']:g} GB free")
    finish(qpy, blocker)
    assert qpy.wait_status(big)["status"] == "done"


def test_why_refuses_unknown_jobs_and_bad_ids(qpy):
    proc = qpy.run("why", "7", check=False)
    assert_one_line_error(proc, "job 7 not found")
    assert proc.returncode == 3
    proc = qpy.run("why", "x", check=False)
    assert_one_line_error(proc, "why takes a job ID, not 'x'")
    assert proc.returncode == 2
