"""Wall-time limits: ``qpy sub -t`` in Slurm's formats and the ``time=`` directive; at the
limit the job's supervisor sends SIGTERM to the whole tree and SIGKILL after killGrace,
and the job ends ``killed`` with the reason ``time limit HH:MM:SS``. The supervisor's own
timer enforces it, so it holds while the master is down (a SIGKILLed master's successor
records the end from the slot). A limit on a namespace node: tests/test_remote_nodes.py.
"""

from __future__ import annotations

import signal

import pytest
from conftest import assert_one_line_error, pid_alive, wait_for

from qpy import timetext

# The job's main shell and a child that ignores SIGTERM, each writing its PID first.
STUBBORN = ("sh -c 'trap \"\" TERM; echo $$ > child; while :; do sleep 0.1; done' & "
            "echo $$ > main; wait")


@pytest.mark.parametrize("text,seconds,shown", [
    ("10", 600, "00:10:00"), ("1:30", 90, "00:01:30"), ("2:03:04", 7384, "02:03:04"),
    ("1-2", 93600, "1-02:00:00"), ("1-02:30", 95400, "1-02:30:00"),
    ("3-4:05:06", 273906, "3-04:05:06"), ("0", None, "UNLIMITED"),
    ("UNLIMITED", None, "UNLIMITED"), ("unlimited", None, "UNLIMITED"),
    ("90", 5400, "01:30:00"), ("0:59", 59, "00:00:59"),
])
def test_slurm_formats(text, seconds, shown):
    assert timetext.parse_limit(text) == seconds
    assert timetext.format_limit(seconds) == shown


@pytest.mark.parametrize("text,slurm,clock", [
    ("45", 2700, 45), ("1:30", 90, 5400), ("2:03:04", 7384, 7384), ("1-2", 93600, 93600),
    ("2-04:00:00", 187200, 187200), ("0", None, None),
])
def test_one_parser_reads_slurm_limits_and_the_admins_idle_times_each_their_way(
        text, slurm, clock):
    assert timetext.parse_limit(text, "x", timetext.SLURM) == slurm
    assert timetext.parse_limit(text, "x", timetext.CLOCK) == clock


@pytest.mark.parametrize("text,style,words", [
    ("90s", timetext.SLURM, "is not M, M:S"), ("UNLIMITED", timetext.CLOCK, "expected a "),
    ("1:99:00", timetext.CLOCK, "expected a "), ("1:5:00", timetext.CLOCK, None),
    ("36500000d", timetext.CLOCK, "longer than a century"),
])
def test_each_style_keeps_its_own_forms(text, style, words):
    if words is None:
        assert timetext.parse_limit(text, "x", style) == 3900
        return
    with pytest.raises(timetext.TimeError) as exc:
        timetext.parse_limit(text, "x", style)
    assert str(exc.value).startswith("x: ") and words in str(exc.value), exc.value


@pytest.mark.parametrize("bad", ["", "x", "-5", "1:2:3:4", "1-", "1-2:3:4:5", "1.5",
                                 "10 min", "99999999999"])
def test_bad_time_limits_are_refused_naming_the_value(qpy, bad):
    proc = qpy.run("sub", "-t", bad, "true", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "-t" in proc.stderr and repr(bad) in proc.stderr, proc.stderr


def test_a_job_that_ends_within_its_limit_is_done(qpy):
    job = qpy.sub("--time", "5", "sh", "-c", "exit 3")
    record = qpy.wait_status(job)
    assert (record["status"], record["exit_code"], record["reason"]) == ("done", 3, None)
    assert record["time_limit"] == 300


def test_limit_reached_kills_the_whole_tree_after_the_grace(qpy):
    qpy.run("config", "killGrace", "1")
    job = qpy.sub("-t", "0:1", "sh", "-c", STUBBORN)
    wait_for(lambda: all((qpy.work / n).exists() and (qpy.work / n).read_text().strip()
                         for n in ("main", "child")), what="the job's processes to start")
    pids = [int((qpy.work / n).read_text()) for n in ("main", "child")]
    record = qpy.wait_status(job)
    assert record["status"] == "killed"
    assert record["reason"] == "time limit 00:00:01"
    assert record["signal"] == signal.SIGTERM  # the main shell took the SIGTERM
    assert not any(pid_alive(p) for p in pids)  # the child that ignored it got SIGKILL
    assert qpy.run("check", "--json", str(job)).returncode == 0
    fmt = qpy.run("config", "checkFMT", "%j %s %T %e\\n")
    assert fmt.returncode == 0
    assert qpy.run("check", str(job)).stdout == f"{job} killed 00:00:01 sig15\n"


def test_directive_and_option(qpy):
    script = qpy.work / "job.sh"
    script.write_text("#!/bin/sh\n#QPY time=1-00:00\ntrue\n")
    script.chmod(0o755)
    qpy.run("ctrlQueue", "pause")
    from_directive = qpy.sub("./job.sh")
    option_wins = qpy.sub("-t", "UNLIMITED", "./job.sh")
    assert qpy.job(from_directive)["time_limit"] == 86400
    assert qpy.job(option_wins)["time_limit"] is None
    script.write_text("#!/bin/sh\n#QPY time=soon\ntrue\n")
    proc = qpy.run("sub", "./job.sh", check=False)
    assert proc.returncode == 2 and "#QPY time" in proc.stderr and "'soon'" in proc.stderr


def test_limit_holds_while_the_master_is_down(qpy):
    """The master is SIGKILLed while the job runs: the supervisor ends the job at its
    limit all the same, and the next master records the time-limit end."""
    job = qpy.sub("-t", "0:2", "sh", "-c", "echo $$ > main; exec sleep 300")
    wait_for(lambda: (qpy.work / "main").exists() and (qpy.work / "main").read_text()
             .strip(), what="the job to start")
    main = int((qpy.work / "main").read_text())
    qpy.kill_daemon("master")
    wait_for(lambda: not pid_alive(main), what="the job to reach its limit")
    assert qpy.pid("master") is None  # nobody restarted it: the node did this alone
    record = qpy.wait_status(job)  # starts a new master, which adopts the job's end
    assert (record["status"], record["reason"]) == ("killed", "time limit 00:00:02")
    assert record["signal"] == signal.SIGTERM


def test_a_kill_before_the_limit_is_a_plain_kill(qpy):
    job = qpy.sub("-t", "10", "sh", "-c", "echo $$ > main; exec sleep 300")
    wait_for(lambda: (qpy.work / "main").exists(), what="the job to start")
    qpy.run("kill", str(job))
    record = qpy.wait_status(job)
    assert (record["status"], record["reason"]) == ("killed", None)
