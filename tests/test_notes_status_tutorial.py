"""``qpy notes``, ``qpy status`` and ``qpy tutorial`` through the real CLI, and the
one-line errors of unknown commands and options."""

from __future__ import annotations

import json
import os
import pwd
import re
from pathlib import Path

import pytest
from conftest import NODE, wait_for

MANUAL = Path(__file__).resolve().parent.parent / "manual" / "users.md"
NOTE_HEAD = re.compile(r"----- Note added at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\n")


def one_line_error(proc, *names: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert proc.stderr.startswith("qpy:"), proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


# --- notes --------------------------------------------------------------------------------


def test_no_notes(qpy):
    assert qpy.run("notes").stdout == "You have no notes.\n"
    qpy.wait_status(qpy.sub("true"))
    assert qpy.run("notes").stdout == "You have no notes.\n"


def test_add_list_and_show_a_note(qpy):
    job = qpy.sub("true")
    proc = qpy.run("notes", str(job), "some", "text")
    assert proc.stdout == "Note stored.\n"
    assert proc.stderr == ""
    assert qpy.run("notes").stdout == f"You have notes for the following jobs:\n{job}\n"
    shown = qpy.run("notes", str(job)).stdout
    assert NOTE_HEAD.match(shown), shown
    assert NOTE_HEAD.sub("", shown).strip() == "some text"


def test_notes_accumulate_and_keep_lines(qpy):
    job = qpy.sub("true")
    qpy.run("notes", str(job), "first note")
    qpy.run("notes", str(job), "second\nline two")
    shown = qpy.run("notes", str(job)).stdout
    assert len(NOTE_HEAD.findall(shown)) == 2
    assert shown.index("first note") < shown.index("second\nline two")


def test_notes_listing_names_every_job_with_notes(qpy):
    ids = [qpy.sub("true") for _ in range(3)]
    qpy.run("notes", str(ids[2]), "c")
    qpy.run("notes", str(ids[0]), "a")
    out = qpy.run("notes").stdout
    assert out.startswith("You have notes for the following jobs:\n")
    listed = out.splitlines()[1].split()
    assert sorted(map(int, listed)) == [ids[0], ids[2]]


def test_job_without_notes(qpy):
    job = qpy.sub("true")
    assert qpy.run("notes", str(job)).stdout == f"No notes for {job}\n"


def test_notes_for_missing_job(qpy):
    one_line_error(qpy.run("notes", "99", check=False), "99")
    one_line_error(qpy.run("notes", "99", "text", check=False), "99")
    assert qpy.run("notes").stdout == "You have no notes.\n"


def test_notes_for_bad_id(qpy):
    one_line_error(qpy.run("notes", "abc", check=False), "abc")
    one_line_error(qpy.run("notes", "abc", "text", check=False), "abc")


def test_notes_survive_a_master_restart(qpy):
    job = qpy.sub("true")
    qpy.wait_status(job)
    qpy.run("notes", str(job), "kept")
    qpy.run("restart")
    assert "kept" in qpy.run("notes", str(job)).stdout


# --- status -------------------------------------------------------------------------------


def status_json(qpy) -> dict:
    """``qpy status --json`` once the master has reached the multiuser."""
    def ok():
        proc = qpy.run("status", "--json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    return wait_for(ok, what="qpy status to answer")


def localhost(data: dict) -> dict:
    found = [n for n in data["nodes"] if n["name"] == NODE]
    assert len(found) == 1, data["nodes"]
    return found[0]


def expected_bar(used: int, cores: int) -> str:
    return "[" + "*" * used + "." * (cores - used) + "]"


def test_status_as_first_command(qpy):
    proc = qpy.run("status", check=False)
    assert proc.returncode == 0, proc.stderr
    assert NODE in proc.stdout


def test_status_json(qpy):
    data = status_json(qpy)
    assert list(data) == ["version", "users", "nodes", "allocator", "sessions"]
    assert data["version"] == 1
    assert data["allocator"]["kind"] == "personal"
    assert data["sessions"] == []  # interactive sessions (qpy connect), none here
    node = localhost(data)
    assert node["cores"] >= 1
    assert node["used_cores"] == 0
    assert node["up"] is True
    assert node["mem"] > 0
    users = [u for u in data["users"] if u["user"] == me()]
    assert len(users) == 1
    assert users[0]["used"] == 0


def test_status_text_tables(qpy):
    cores = localhost(status_json(qpy))["cores"]
    text = qpy.run("status").stdout
    lines = text.splitlines()
    assert any(line.split()[:2] == [me(), "0"] for line in lines if line.strip()), text
    node_lines = [line for line in lines if line.startswith(NODE)]
    assert len(node_lines) == 1, text
    if cores <= 16:
        assert expected_bar(0, cores) in node_lines[0]
    assert f"0/{cores}" in node_lines[0]
    assert f"There are 0 out of a total of {cores} cores being used." in text


def test_status_while_a_job_runs(qpy):
    status_json(qpy)
    job = qpy.sub("sleep", "60")
    qpy.wait_status(job, "running")
    data = status_json(qpy)
    node = localhost(data)
    assert node["used_cores"] == 1
    assert [u["used"] for u in data["users"] if u["user"] == me()] == [1]
    text = qpy.run("status").stdout
    node_line = next(line for line in text.splitlines() if line.startswith(NODE))
    if node["cores"] <= 16:
        assert expected_bar(1, node["cores"]) in node_line
    assert f"1/{node['cores']}" in node_line
    assert qpy.run("kill", "all").stdout == "1 job will be killed.\n"
    qpy.wait_status(job, "killed")
    wait_for(lambda: localhost(status_json(qpy))["used_cores"] == 0,
             what="the core to be given back")


def test_status_rejects_arguments(qpy):
    one_line_error(qpy.run("status", "extra", check=False), "extra")


# --- tutorial -----------------------------------------------------------------------------


def test_tutorial_prints_the_manual(qpy):
    proc = qpy.run("tutorial")
    assert proc.stderr == ""
    assert proc.stdout.startswith(MANUAL.read_text())


@pytest.mark.parametrize("keyword", ["ctrlQueue", "checkFMT", "notes"])
def test_tutorial_opens_at_heading(qpy, keyword):
    out = qpy.run("tutorial", keyword).stdout
    first = out.splitlines()[0]
    assert first.startswith("#"), first
    assert keyword.lower() in first.lower()
    assert MANUAL.read_text().find(first) >= 0
    assert len(out) < len(qpy.run("tutorial").stdout)


def test_tutorial_keyword_case_insensitive(qpy):
    assert qpy.run("tutorial", "CTRLQUEUE").stdout == qpy.run("tutorial", "ctrlQueue").stdout


def test_tutorial_unknown_keyword(qpy):
    one_line_error(qpy.run("tutorial", "zzqqxxnotthere", check=False), "zzqqxxnotthere")


# --- unknown commands and options ---------------------------------------------------------


@pytest.mark.parametrize("args", [["frobnicate"], ["check", "--bogus"], ["kill"],
                                  ["ctrlQueue", "sideways"], ["status", "--bogus"]])
def test_unknown_command_or_option(qpy, args):
    proc = qpy.run(*args, check=False)
    one_line_error(proc)
    word = next((a for a in args if a.startswith("-") or a in ("frobnicate", "sideways")),
                None)
    if word:
        assert word in proc.stderr
