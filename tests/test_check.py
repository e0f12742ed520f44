"""``qpy check`` through the real CLI: selections, JSON records, the default pattern,
colour only on a terminal, the paused notice, and one-line errors."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import NODE, on_tty

LINE = re.compile(r"^(\d+) \((\w+)[,)]", re.MULTILINE)


def scenario(qpy) -> dict[int, str]:
    """Jobs 1-3 done (2 from work/other), 4 undone (killed while queued); returns id -> cwd."""
    other = qpy.work / "other"
    other.mkdir()
    ids = [qpy.sub("true"), qpy.sub("true", cwd=other), qpy.sub("true")]
    for job in ids:
        qpy.wait_status(job, "done")
    qpy.run("ctrlQueue", "pause")
    undone = qpy.sub("true")
    qpy.run("kill", str(undone))
    qpy.wait_status(undone, "undone")
    qpy.run("ctrlQueue", "continue")
    assert ids + [undone] == [1, 2, 3, 4]
    return {1: "work", 2: "other", 3: "work", 4: "work"}


def listed(qpy, *selection: str, cwd=None) -> list[int]:
    """IDs printed by plain ``qpy check`` (default pattern), in order."""
    proc = qpy.run("check", *selection, cwd=cwd)
    assert proc.stderr == ""
    return [int(m.group(1)) for m in LINE.finditer(proc.stdout)]


def nothing(qpy, *selection: str) -> None:
    """``qpy check SELECTION`` matches no job: exit 3 and one line naming the selection,
    for the text and the JSON form alike."""
    for extra in ((), ("--json",)):
        proc = qpy.run("check", *selection, *extra, check=False)
        assert (proc.returncode, proc.stdout) == (3, ""), (selection, proc.stderr)
        assert proc.stderr == f"qpy: no job matches {' '.join(selection)}\n"


def test_no_jobs_lists_nothing(qpy):
    proc = qpy.run("check")
    assert proc.stdout == ""
    assert proc.stderr == ""
    assert qpy.jobs() == []


def test_no_selection_lists_all(qpy):
    scenario(qpy)
    assert listed(qpy) == [1, 2, 3, 4]
    assert [j["id"] for j in qpy.jobs()] == [1, 2, 3, 4]


SELECTIONS = [
    (["done"], [1, 2, 3]),
    (["undone"], [4]),
    (["2"], [2]),
    (["2-3"], [2, 3]),
    (["1,3"], [1, 3]),
    (["1-2,4"], [1, 2, 4]),
    (["3-100"], [3, 4]),
    (["99", "3"], [3]),
    (["queue", "4"], [4]),
    (["undone", "2"], [2, 4]),
    (["1", "3-4"], [1, 3, 4]),
    (["undone", "other"], [2, 4]),
    (["done", "undone"], [1, 2, 3, 4]),
]


@pytest.mark.parametrize("selection,expected", SELECTIONS,
                         ids=[" ".join(s) for s, _ in SELECTIONS])
def test_selection(qpy, selection, expected):
    scenario(qpy)
    assert listed(qpy, *selection) == expected
    assert [j["id"] for j in qpy.jobs(*selection)] == expected


def test_selection_that_matches_nothing_exits_3(qpy):
    nothing(qpy, "1")  # no job at all yet
    scenario(qpy)
    nothing(qpy, "99999")
    nothing(qpy, "queue")
    nothing(qpy, "running", "killed", "5-7,9")
    empty = qpy.work / "empty"
    empty.mkdir()
    nothing(qpy, "empty")
    assert listed(qpy) == [1, 2, 3, 4]  # no selection: everything, and exit 0


def test_huge_job_ids_are_bad_input(qpy):
    qpy.wait_status(qpy.sub("true"))
    big = "99999999999999999999"
    for words, item in (([f"1-{big}"], f"{big!r} in '1-{big}'"), ([big], repr(big)),
                        ([f"3,{big}"], f"{big!r} in '3,{big}'")):
        proc = qpy.run("check", *words, check=False)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert proc.stderr == (f"qpy: invalid job ID {item}: IDs go up to "
                               f"{2 ** 63 - 1}\n")
    top = str(2 ** 63 - 1)
    nothing(qpy, top)
    assert listed(qpy, f"1-{top}") == [1]
    for args in (("notes", big), ("ctrlQueue", "jump", "1", big), ("kill", big)):
        proc = qpy.run(*args, check=False)
        assert (proc.returncode, proc.stdout) == (2, ""), (args, proc.stderr)
        assert big in proc.stderr and "IDs go up to" in proc.stderr, proc.stderr


def test_directory_dot_lists_only_jobs_from_here(qpy):
    scenario(qpy)
    assert listed(qpy, ".") == [1, 3, 4]
    assert listed(qpy, ".", cwd=qpy.work / "other") == [2]
    assert listed(qpy, "other") == [2]


def test_directory_selection_does_not_include_subdirectories(qpy):
    scenario(qpy)
    deeper = qpy.work / "other" / "deeper"
    deeper.mkdir()
    qpy.wait_status(qpy.sub("true", cwd=deeper))
    assert listed(qpy, "other") == [2]
    assert listed(qpy, ".", cwd=deeper) == [5]


def test_running_and_killed_statuses(qpy):
    job = qpy.sub("sleep", "60")
    qpy.wait_status(job, "running")
    assert listed(qpy, "running") == [job]
    nothing(qpy, "queue", "killed")
    qpy.run("kill", str(job))
    qpy.wait_status(job, "killed")
    assert listed(qpy, "killed") == [job]
    nothing(qpy, "running")


def test_queued_status(qpy):
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("true")
    assert listed(qpy, "queue") == [job]
    nothing(qpy, "done")


def test_json_records(qpy):
    done = qpy.sub("sh", "-c", "exit 3")
    qpy.wait_status(done)
    proc = qpy.run("check", "--json")
    document = json.loads(proc.stdout)
    assert set(document) == {"version", "jobs"} and document["version"] == 1
    records = document["jobs"]
    assert isinstance(records, list) and len(records) == 1
    record = records[0]
    assert record["id"] == done
    assert record["status"] == "done"
    assert record["command"] == "sh -c 'exit 3'"
    assert record["cwd"] == os.path.realpath(qpy.work)
    assert record["exit_code"] == 3
    assert record["node"] == NODE
    assert (record["n_cores"], record["mem"]) == (1, 5.0)


def test_json_with_selection_and_unfinished_job(qpy):
    qpy.wait_status(qpy.sub("true"))
    qpy.run("ctrlQueue", "pause")
    queued = qpy.sub("true")
    records = json.loads(qpy.run("check", "queue", "--json").stdout)["jobs"]
    assert [r["id"] for r in records] == [queued]
    assert records[0]["status"] == "queue"
    assert records[0]["exit_code"] is None
    assert records[0]["node"] is None


def test_json_ignores_pattern_and_paused_notice(qpy):
    qpy.wait_status(qpy.sub("true"))
    qpy.run("config", "checkFMT", "%j\\n")
    qpy.run("ctrlQueue", "pause")
    records = json.loads(qpy.run("check", "--json").stdout)["jobs"]  # nothing but JSON
    assert [r["id"] for r in records] == [1]


@pytest.mark.parametrize("bad", ["abc", "0", "5-2", "1,,2", "-3", "1-"])
def test_bad_selection_is_a_one_line_error(qpy, bad):
    qpy.wait_status(qpy.sub("true"))
    proc = qpy.run("check", bad, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert proc.stderr.startswith("qpy:")
    assert repr(bad) in proc.stderr or bad in proc.stderr


def test_unknown_option_is_a_one_line_error(qpy):
    proc = qpy.run("check", "--bogus", check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("qpy:") and "--bogus" in proc.stderr


def test_default_format(qpy):
    job = qpy.sub("echo", "hi  there")
    qpy.wait_status(job)
    work = os.path.realpath(qpy.work)
    assert qpy.run("check").stdout == \
        f"{job} (done):echo 'hi  there' (on {NODE}; wd: {work})\n"


def test_default_format_of_queued_job(qpy):
    qpy.run("ctrlQueue", "pause")
    job = qpy.sub("true")
    work = os.path.realpath(qpy.work)
    assert qpy.run("check", str(job)).stdout == \
        f"{job} (queue):true (on -; wd: {work})\nJob submission is paused.\n"


def test_default_format_shows_failures(qpy):
    """An exit code other than 0, a signal, and a start that failed are on the line;
    a clean end reads as before."""
    work = os.path.realpath(qpy.work)
    gone = qpy.work / "gone"
    gone.mkdir()
    qpy.run("ctrlQueue", "pause")
    clean, three, signalled = qpy.sub("true"), qpy.sub("exit 3"), qpy.sub("kill -9 $$")
    never = qpy.sub("true", cwd=gone)
    gone.rmdir()  # the job's directory is removed before it starts
    qpy.run("ctrlQueue", "continue")
    for job in (clean, three, signalled, never):
        qpy.wait_status(job)
    lines = qpy.run("check").stdout.splitlines()
    assert lines[:3] == [
        f"{clean} (done):true (on {NODE}; wd: {work})",
        f"{three} (done, exit 3):exit 3 (on {NODE}; wd: {work})",
        f"{signalled} (done, signal 9):kill -9 $$ (on {NODE}; wd: {work})"]
    reason = qpy.job(never)["reason"]
    assert reason.startswith("failed to start: ") and str(gone) in reason
    assert lines[3] == f"{never} (done, {reason}):true (on {NODE}; wd: {gone})"
    assert len(lines) == 4


@pytest.mark.parametrize("setting", [None, "true"])
def test_no_ansi_escapes_when_not_a_terminal(qpy, setting):
    if setting:
        qpy.run("config", "colour", setting)
    qpy.wait_status(qpy.sub("true"))
    qpy.run("ctrlQueue", "pause")
    qpy.sub("true")
    proc = qpy.run("check")
    assert "\x1b" not in proc.stdout
    assert listed(qpy) == [1, 2]


def test_paused_notice(qpy):
    qpy.wait_status(qpy.sub("true"))
    assert not qpy.run("check").stdout.endswith("Job submission is paused.\n")
    assert qpy.run("ctrlQueue", "pause").stdout == "Job submission paused.\n"
    out = qpy.run("check").stdout
    assert out.endswith("\nJob submission is paused.\n")
    assert out.count("Job submission is paused.") == 1
    assert qpy.run("ctrlQueue", "continue").stdout == "Job submission continued.\n"
    assert "paused" not in qpy.run("check").stdout


def test_paused_notice_with_no_jobs(qpy):
    qpy.run("ctrlQueue", "pause")
    assert qpy.run("check").stdout == "Job submission is paused.\n"


def test_paused_notice_with_selection_matching_nothing(qpy):
    qpy.run("ctrlQueue", "pause")
    nothing(qpy, "done")  # the error, not a list



def test_colour_on_a_terminal_but_not_in_a_pipe(qpy):
    qpy.wait_status(qpy.sub("true"))
    qpy.run("config", "colour", "true")
    coloured = on_tty(qpy, "check")
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == qpy.run("check").stdout
    assert "\x1b" not in qpy.run("check").stdout
