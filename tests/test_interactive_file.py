"""The admin's ``interactive`` file (limits and idle policy of qpy connect), parsed strictly,
and the idle times as users and the admin see them (``[D-]HH:MM:SS``, ``%I``).

Pure: no daemons, only files in a temporary directory.
"""

from __future__ import annotations

import pytest

from qpy import render
from qpy_multiuser import interactive
from qpy_multiuser.nodes import FileError


def parse(text: str) -> interactive.Policy:
    return interactive.parse(text, "interactive")


def test_no_file_means_no_limits_and_no_idle_policy(tmp_path):
    policy = interactive.load(tmp_path)
    assert policy.public() == {"max_sessions": None, "max_cores": None, "max_mem": None,
                               "idle_warn": None, "idle_limit": None, "idle_action": "end"}


def test_every_setting_with_comments_and_blank_lines():
    policy = parse("# interactive sessions\n\nmax_sessions 3\nmax_cores 4   # per session\n"
                   "max_mem 16.5\nidle_warn 2-00:00:00\nidle_limit 3d\nidle_action preempt\n")
    assert policy.public() == {"max_sessions": 3, "max_cores": 4, "max_mem": 16.5,
                               "idle_warn": 172800.0, "idle_limit": 259200.0,
                               "idle_action": "preempt"}


@pytest.mark.parametrize("text,seconds", [
    ("2-04:00:00", 187200), ("36:00:00", 129600), ("00:00:06", 6), ("1:30", 5400),
    ("90s", 90), ("30m", 1800), ("12h", 43200), ("2d", 172800), ("45", 45),
])
def test_durations(text, seconds):
    assert interactive.duration(text, "x") == seconds


def test_zero_turns_a_limit_off():
    assert parse("idle_limit 0\nidle_warn 00:00:00\n").public()["idle_limit"] is None


@pytest.mark.parametrize("text,line,words", [
    ("max_sessions three\n", 1, ("expected a number", "'three'")),
    ("max_sessions -1\n", 1, ("at least 0",)),
    ("\nmax_cores 0\n", 2, ("at least 1",)),
    ("max_mem nan\n", 1, ("at least",)),
    ("idle_limit soon\n", 1, ("duration", "'soon'")),
    ("idle_warn 1:99:00\n", 1, ("duration",)),
    ("idle_action kill\n", 1, ("end or preempt", "'kill'")),
    ("max_sessions 3\nmax_sessions 4\n", 2, ("set twice",)),
    ("max_session 3\n", 1, ("unknown setting", "'max_session'")),
    ("max_sessions\n", 1, ("KEY VALUE",)),
])
def test_mistakes_name_the_file_and_line(text, line, words):
    with pytest.raises(FileError) as exc:
        parse(text)
    message = str(exc.value)
    assert message.startswith(f"interactive:{line}: "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("seconds,text", [
    (0, "00:00:00"), (59.9, "00:00:59"), (3661, "01:01:01"), (86399, "23:59:59"),
    (86400, "1-00:00:00"), (187200, "2-04:00:00"), (-5, "00:00:00"),
])
def test_idle_text(seconds, text):
    assert render.idle_text(seconds) == text


def test_idle_placeholder_only_for_running_sessions():
    job = {"id": 7, "status": "running", "idle_since": 1000.0}
    assert render.format_job("%j %I", job, 1000.0 + 3725) == "7 01:02:05"
    assert render.format_job("%I", {**job, "status": "done"}, 5000.0) == "-"
    assert render.format_job("%I", {"id": 8, "status": "running"}, 5000.0) == "-"
