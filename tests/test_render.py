import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpy.render import (
    COLOURS,
    DEFAULT_FMT,
    DEFAULT_SCHEME,
    FormatError,
    colour_for,
    format_job,
    render_jobs,
    validate_fmt,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
NOW = T0 + 100_000.0


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pin local time so %Q/%S/%E have known text; restored afterwards."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_job(**changes: object) -> dict:
    job = {
        "id": 42,
        "status": "done",
        "command": "python run.py",
        "cwd": "/home/u/w",
        "node": "node3",
        "n_cores": 4,
        "mem": 5.0,
        "attr": "(big and fast)",
        "t_queue": T0,
        "t_start": T0 + 60,
        "t_end": T0 + 60 + 27 * 3600 + 3 * 60 + 9,
        "exit_code": 0,
        "signal": None,
        "reason": None,
        "notes": None,
    }
    job.update(changes)
    return job


def fmt(pattern: str, **changes: object) -> str:
    return format_job(pattern, make_job(**changes), NOW)


def test_default_format() -> None:
    assert fmt(DEFAULT_FMT) == "42 (done):python run.py (on node3; wd: /home/u/w)\n"


def test_default_format_without_node_prints_a_dash() -> None:
    line = fmt(DEFAULT_FMT, status="queue", node=None, exit_code=None, t_start=None, t_end=None)
    assert line == "42 (queue):python run.py (on -; wd: /home/u/w)\n"


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "42 (done):python run.py (on node3; wd: /home/u/w)\n"),
        ({"exit_code": 3}, "42 (done, exit 3):python run.py (on node3; wd: /home/u/w)\n"),
        ({"status": "killed", "exit_code": None, "signal": 15},
         "42 (killed, signal 15):python run.py (on node3; wd: /home/u/w)\n"),
        ({"exit_code": None, "reason": "failed to start: Permission denied: /w/job_42.out"},
         "42 (done, failed to start: Permission denied: /w/job_42.out):python run.py "
         "(on node3; wd: /home/u/w)\n"),
        ({"status": "lost", "exit_code": None, "reason": "node node3 went down: refused"},
         "42 (lost, node node3 went down: refused):python run.py (on node3; wd: /home/u/w)\n"),
        ({"status": "undone", "node": None, "exit_code": None, "t_start": None},
         "42 (undone):python run.py (on -; wd: /home/u/w)\n"),
        # a live job never shows an outcome, even one left from an earlier attempt
        ({"status": "queue", "node": None, "exit_code": None, "reason": "requeued"},
         "42 (queue):python run.py (on -; wd: /home/u/w)\n"),
    ],
)
def test_default_format_shows_how_a_job_ended_when_not_cleanly(changes: dict, line: str) -> None:
    assert fmt(DEFAULT_FMT, **changes) == line


@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        ({}, "", "-"),
        ({"exit_code": 1}, ", exit 1", "-"),
        ({"exit_code": 137, "signal": 9, "status": "killed"}, ", signal 9", "-"),
        ({"exit_code": 2, "reason": "why"}, ", exit 2, why", "why"),
        ({"status": "running", "exit_code": None, "reason": "why"}, "", "why"),
    ],
)
def test_outcome_and_reason_placeholders(changes: dict, outcome: str, reason: str) -> None:
    assert fmt("%o", **changes) == outcome
    assert fmt("%r", **changes) == reason


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("%j", "42"),
        ("%s", "done"),
        ("%c", "python run.py"),
        ("%d", "/home/u/w"),
        ("%n", "node3"),
        ("%N", "4"),
        ("%m", "5"),
        ("%a", "(big and fast)"),
        ("%A", "node3"),
        ("%R", "27:03:09"),
        ("%Q", "2023-11-14 22:13:20"),
        ("%S", "2023-11-14 22:14:20"),
        ("%E", "2023-11-16 01:17:29"),
        ("%K", ""),
        ("%e", "0"),
        ("%%", "%"),
        ("[%j|%N]", "[42|4]"),
    ],
)
def test_placeholders(pattern: str, expected: str) -> None:
    assert fmt(pattern) == expected


@pytest.mark.parametrize(("mem", "text"), [(0.5, "0.5"), (5, "5"), (2.25, "2.25"), (0.1, "0.1")])
def test_memory(mem: float, text: str) -> None:
    assert fmt("%m", mem=mem) == text


def test_missing_optional_fields() -> None:
    job = {"status": "queue", "node": None, "attr": None, "t_start": None, "t_end": None}
    assert fmt("%n|%a|%A|%S|%E|%r", **job) == "-|-|-|-|-|-"


def test_node_or_attr_shows_attr_in_brackets_without_node() -> None:
    assert fmt("%A", node=None, status="queue") == "[(big and fast)]"


def test_notes_follow_a_newline() -> None:
    assert fmt("%j%K", notes="needs gpu") == "42\nneeds gpu"


def test_percent_escape_is_not_a_placeholder() -> None:
    assert fmt("%%j 100%%") == "%j 100%"


def test_command_text_is_not_expanded_again() -> None:
    out = fmt("%c in %d", command="echo %d %j %%")
    assert out == "echo %d %j %% in /home/u/w"


def test_unknown_placeholder_left_alone_when_formatting() -> None:
    assert fmt("%x %j %") == "%x 42 %"


@pytest.mark.parametrize(
    ("changes", "elapsed"),
    [
        ({"status": "queue", "t_start": None, "t_end": None}, "27:46:40"),
        ({"status": "queue", "t_start": T0 + 50, "t_end": T0 + 70}, "27:46:40"),
        ({"status": "running", "t_start": NOW - 3725, "t_end": None}, "1:02:05"),
        ({"status": "done"}, "27:03:09"),
        ({"status": "killed", "t_start": T0 + 10, "t_end": T0 + 70}, "0:01:00"),
        ({"status": "killed", "t_start": None, "t_end": T0 + 5}, "0:00:05"),
        ({"status": "undone", "t_start": None, "t_end": T0 + 3600}, "1:00:00"),
        ({"status": "running", "t_start": NOW + 5, "t_end": None}, "0:00:00"),
    ],
)
def test_running_time(changes: dict, elapsed: str) -> None:
    assert fmt("%R", **changes) == elapsed


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"exit_code": 0}, "0"),
        ({"exit_code": 3}, "3"),
        ({"status": "killed", "exit_code": None, "signal": 9}, "sig9"),
        ({"status": "killed", "exit_code": 137, "signal": 9}, "sig9"),
        ({"status": "undone", "exit_code": None}, "-"),
        ({"status": "queue", "exit_code": None}, "-"),
        ({"status": "running", "exit_code": None}, "-"),
    ],
)
def test_exit(changes: dict, text: str) -> None:
    assert fmt("%e", **changes) == text


def test_validate_fmt_decodes_escapes() -> None:
    assert validate_fmt(r"%j: %s\n") == "%j: %s\n"
    assert validate_fmt(r"%j\t%s") == "%j\t%s"
    assert validate_fmt("a\\\\b") == "a\\b"
    assert validate_fmt("a\\\\n") == "a\\n"


def test_validate_fmt_leaves_other_text_alone() -> None:
    assert validate_fmt("ünïcødé ✓ %j \\x %%") == "ünïcødé ✓ %j \\x %%"
    assert validate_fmt("") == ""


def test_validate_fmt_accepts_every_placeholder() -> None:
    every = "%j%s%c%d%n%N%m%a%A%R%Q%S%E%K%e%o%r%%"
    assert validate_fmt(every) == every


@pytest.mark.parametrize(
    ("pattern", "token"),
    [("%j %x", "'%x'"), ("%J", "'%J'"), ("%", "lone '%'"), ("%j %%%", "lone '%'")],
)
def test_validate_fmt_rejects(pattern: str, token: str) -> None:
    with pytest.raises(FormatError) as info:
        validate_fmt(pattern)
    assert token in str(info.value)


def test_validate_fmt_error_is_one_line() -> None:
    with pytest.raises(FormatError) as info:
        validate_fmt("%\\n")
    assert "\n" not in str(info.value)
    assert "'%\\n'" in str(info.value)


def test_format_error_is_value_error() -> None:
    assert issubclass(FormatError, ValueError)


@pytest.mark.parametrize(
    ("status", "colour"),
    [
        ("queue", "yellow"),
        ("running", "blue"),
        ("done", "green"),
        ("killed", "red"),
        ("undone", "grey"),
    ],
)
def test_colour_for_default_scheme(status: str, colour: str) -> None:
    assert colour_for(status, list(DEFAULT_SCHEME)) == colour


def test_colour_for_custom_scheme() -> None:
    scheme = ["red", "green", "blue", "cyan", "white"]
    assert colour_for("queue", scheme) == "red"
    assert colour_for("undone", scheme) == "white"


def test_colour_for_falls_back_to_default() -> None:
    assert colour_for("undone", ["red"]) == DEFAULT_SCHEME[4]
    assert colour_for("queue", ["puce"]) == DEFAULT_SCHEME[0]
    assert colour_for("weird", list(DEFAULT_SCHEME)) == "white"


def test_defaults_are_valid_colours() -> None:
    assert set(DEFAULT_SCHEME) <= set(COLOURS)


def test_render_without_colour_concatenates() -> None:
    jobs = [make_job(id=1), make_job(id=2, status="queue")]
    assert render_jobs(jobs, "%j %s\n", None, NOW) == "1 done\n2 queue\n"
    assert render_jobs([], "%j\n", None, NOW) == ""


def test_render_with_colour_wraps_each_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")  # force_color must still win
    jobs = [make_job(id=1), make_job(id=2, status="queue")]
    out = render_jobs(jobs, "%j %s\n", list(DEFAULT_SCHEME), NOW)
    green, yellow, reset = "\x1b[32m", "\x1b[33m", "\x1b[0m"
    assert out == f"{green}1 done{reset}\n{yellow}2 queue{reset}\n"


def test_render_colour_uses_custom_scheme() -> None:
    out = render_jobs([make_job(status="killed")], "%j", ["red"] * 5, NOW)
    assert out == "\x1b[31m42\x1b[0m"


def test_render_without_colour_has_no_escape_codes() -> None:
    out = render_jobs([make_job()], DEFAULT_FMT, None, NOW)
    assert "\x1b" not in out


def test_import_does_not_load_termcolor() -> None:
    code = "import sys, qpy.render; print('termcolor' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "False"
