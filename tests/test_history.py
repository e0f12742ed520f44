"""``qpy history``: every run of every job, cleaned ones too, with its accounting (CPU
time and peak memory of the whole tree, measured by the job's supervisor); ``--since`` and
``--until``; ``--json`` documents of check, history and status against the manual's
tables; checkFMT ``%M`` and ``%U``; a store written before runs were kept.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NODE, QPY, assert_one_line_error, json_payload, wait_for

from qpy import history_view, jsonout, wire
from qpy.model import RUN_FIELDS, Job
from qpy_master.records import Records
from qpy_master.store import Store

MANUAL = (Path(__file__).resolve().parent.parent / "manual" / "users.md").read_text()
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
# 200 MB written in a child process (so the tree, not only the main process, counts),
# then about half a second of CPU in the main one; exit 3
WORK = (f"{sys.executable} -c 'b = bytes(200 * 2**20); c = bytearray(b); c[::4096] = "
        "bytes(len(c[::4096]))' && "
        f"exec {sys.executable} -c 'import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\n"
        "sys.exit(3)'")


def runs(qpy, *args: str) -> list[dict]:
    return json_payload(qpy.run("history", "--json", *args).stdout, "runs")


def epoch(stamp: str) -> float:
    assert ISO.fullmatch(stamp), stamp
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_run_with_its_accounting(qpy):
    job = qpy.sub("-n", "2", "-m", "1.5", "-t", "5", "sh", "-c", WORK)
    qpy.wait_status(job)
    run, = runs(qpy)
    assert (run["job"], run["run"], run["status"], run["exit_code"], run["signal"]) == \
        (job, 1, "done", 3, None)
    assert (run["n_cores"], run["mem"], run["node"], run["time_limit"]) == \
        (2, 1.5, NODE, 300)
    assert run["command"] == shlex.join(["sh", "-c", WORK])
    assert run["cwd"] == str(qpy.work.resolve())
    assert run["cpu"] >= 0.4, run  # the busy loop, and what the child used
    assert 0.19 <= run["peak_mem"] < 2, run  # the child's 200 MB (and its copy's pages)
    queued, started, ended = (epoch(run[k]) for k in ("t_queue", "t_start", "t_end"))
    assert queued <= started <= ended
    assert run["elapsed"] == pytest.approx(ended - started, abs=1e-5)
    record = qpy.job(job)
    assert (record["cpu"], record["peak_mem"]) == (run["cpu"], run["peak_mem"])
    text = qpy.run("history").stdout.splitlines()
    assert text[0].split() == ["JOB", "RUN", "STATUS", "EXIT", "NODE", "CORES", "MEM",
                               "SUBMITTED", "STARTED", "ENDED", "ELAPSED", "CPU", "PEAK_GB",
                               "COMMAND"]
    words = text[1].split()
    assert words[:7] == [str(job), "1", "done", "3", NODE, "2", "1.5"]
    assert words[15] == f"{run['peak_mem']:.3f}"  # times are two words each
    qpy.run("config", "checkFMT", "%j %M %U\\n")
    cpu = int(run["cpu"])
    assert qpy.run("check").stdout == \
        f"{job} {run['peak_mem']:.3f} 0:{cpu // 60:02d}:{cpu % 60:02d}\n"


def test_cleaned_jobs_keep_their_history(qpy):
    first, second = qpy.sub("true"), qpy.sub("sh", "-c", "exit 1")
    qpy.wait_status(first)
    qpy.wait_status(second)
    assert qpy.run("clean", "all").stdout == "2 finished jobs removed.\n"
    assert qpy.jobs() == []
    assert sorted((r["job"], r["status"], r["exit_code"]) for r in runs(qpy)) == \
        [(first, "done", 0), (second, "done", 1)]
    assert [r["job"] for r in runs(qpy, str(second))] == [second]
    assert qpy.sub("true") == second + 1  # IDs still never repeat


def test_a_run_going_on_is_listed_without_an_end(qpy):
    job = qpy.sub("sh", "-c", "touch started; while [ ! -e go ]; do sleep 0.05; done")
    wait_for(lambda: (qpy.work / "started").exists(), what="the job to start")
    run, = runs(qpy, "running")
    assert (run["job"], run["run"], run["status"], run["t_end"]) == (job, 1, "running", None)
    assert run["elapsed"] >= 0 and run["cpu"] is None and run["peak_mem"] is None
    assert runs(qpy, "done") == []
    (qpy.work / "go").touch()
    qpy.wait_status(job)
    assert [r["status"] for r in runs(qpy, str(job))] == ["done"]


def test_since_and_until(qpy):
    first = qpy.sub("true")
    one = qpy.wait_status(first)
    second = qpy.sub("true")
    two = qpy.wait_status(second)
    assert [r["job"] for r in runs(qpy, "--since", two["t_queue"])] == [second]
    assert [r["job"] for r in runs(qpy, "--until", one["t_end"])] == [first]
    assert [r["job"] for r in runs(qpy, "--since", "1h")] == [first, second]
    assert runs(qpy, "--until", "2000-01-01") == []
    assert runs(qpy, "--since", "2h", "--until", "1h") == []
    today = datetime.date.today().isoformat()
    assert len(runs(qpy, "--since", today)) == 2


@pytest.mark.parametrize("bad", ["yesterday", "2h ago", "13:99", "2026-13-01", "-2h"])
def test_a_when_qpy_cannot_read_is_bad_input(qpy, bad):
    proc = qpy.run("history", "--since", bad, check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "--since" in proc.stderr and repr(bad) in proc.stderr


def test_history_selection_words(qpy):
    proc = qpy.run("history", "queue", check=False)
    assert proc.returncode == 2 and "'queue' cannot be used here" in proc.stderr
    assert runs(qpy, "all") == [] and runs(qpy, "killed") == []


def test_a_command_that_is_not_utf8_is_listed_as_it_is(qpy):
    """Such a run cannot be written by SQLite as text: Python writes the lines then."""
    proc = subprocess.run([QPY, "sub", "sh", "-c", b"echo \xff"], cwd=qpy.work, env=qpy.env,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    qpy.wait_status(1)
    qpy.wait_status(qpy.sub("true"))
    table = subprocess.run([QPY, "history"], cwd=qpy.work, env=qpy.env,
                           capture_output=True, check=True).stdout
    assert table.count(b"\n") == 3 and b"sh -c 'echo \xff'\n" in table
    run = json.loads(subprocess.run([QPY, "history", "--json", "1"], cwd=qpy.work,
                                    env=qpy.env, capture_output=True, check=True).stdout)
    assert run["runs"][0]["command"].encode("utf-8", "surrogateescape") == \
        b"sh -c 'echo \xff'"


# -- JSON documents against the manual ---------------------------------------------------------


def documented(heading: str) -> list[list[str]]:
    """The field names of each table under ``### heading`` in users.md, in order."""
    text = MANUAL.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    tables: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("| field |"):
            tables.append([])
        elif found := re.match(r"\| `(\w+)` \|", line):
            tables[-1].append(found.group(1))
    return tables


def test_json_documents_and_their_schema_in_the_manual(qpy):
    job = qpy.sub("-t", "1:00", "sh", "-c", "exit 2")
    qpy.wait_status(job)
    check = json.loads(qpy.run("check", "--json").stdout)
    history = json.loads(qpy.run("history", "--json").stdout)
    status = wait_for(lambda: json.loads(qpy.run("status", "--json").stdout),
                      what="qpy status")
    assert list(check) == ["version", "jobs"] and check["version"] == 1
    assert list(history) == ["version", "runs"] and history["version"] == 1
    assert list(status) == ["version", "users", "nodes", "allocator", "sessions"]
    assert status["version"] == 1
    assert set(status["allocator"]) == {"kind", "address"}
    for command, document in (("check", check), ("history", history), ("status", status)):
        shown, = re.findall(rf"^(\{{.*\}}) +qpy {command} --json$", MANUAL, re.MULTILINE)
        assert re.findall(r'"(\w+)":', shown) == list(document), shown
    jobs_doc, = documented("JSON: jobs (check)")
    runs_doc, = documented("JSON: runs (history)")
    users_doc, nodes_doc = documented("JSON: users and nodes (status)")
    record, run = check["jobs"][0], history["runs"][0]
    assert list(record) == jobs_doc
    assert set(run) == set(runs_doc)
    assert set(status["users"][0]) == set(users_doc) == set(wire.RECORDS["user"])
    assert set(status["nodes"][0]) == set(nodes_doc) == set(wire.RECORDS["node"])
    assert set(jobs_doc) == set(wire.RECORDS["job"])
    assert set(runs_doc) == {*RUN_FIELDS, "elapsed"}
    for name in ("t_queue", "t_start", "t_end"):
        epoch(record[name])
        epoch(run[name])
    assert (record["time_limit"], run["time_limit"]) == (60, 60)
    assert isinstance(run["elapsed"], float) and isinstance(record["peak_mem"], float)


# -- a store from before runs were kept --------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL,
    command TEXT NOT NULL, cwd TEXT NOT NULL, n_cores INTEGER NOT NULL, mem REAL NOT NULL,
    attr TEXT, node TEXT, address TEXT, t_queue REAL NOT NULL, t_start REAL, t_end REAL,
    exit_code INTEGER, signal INTEGER, reason TEXT, script_copy TEXT, run_command TEXT,
    env_id INTEGER, pid INTEGER, kill_requested INTEGER NOT NULL DEFAULT 0,
    qpos INTEGER NOT NULL DEFAULT 0, requeue INTEGER NOT NULL DEFAULT 0);
INSERT INTO jobs (status, command, cwd, n_cores, mem, node, t_queue, t_start, t_end,
    exit_code) VALUES ('done', 'old job', '/tmp', 1, 5, 'localhost', 1e9, 1e9, 1e9 + 60, 0);
"""


def test_a_store_from_before_runs_were_kept(qpy):
    qpy.home.mkdir(mode=0o700)
    db = sqlite3.connect(qpy.home / "jobs.db")
    db.executescript(OLD_SCHEMA)
    db.commit()
    db.close()
    old, = qpy.jobs()
    assert (old["id"], old["command"], old["time_limit"], old["cpu"]) == (1, "old job", None,
                                                                         None)
    assert runs(qpy) == []  # its run ended before runs were kept
    job = qpy.sub("-t", "2", "true")
    qpy.wait_status(job)
    assert [(r["job"], r["time_limit"]) for r in runs(qpy)] == [(2, 120)]
    assert qpy.run("requeue", "1").stdout == "1 job queued again.\n"
    qpy.wait_status(1)
    assert [r["job"] for r in runs(qpy)] == [2, 1]


# -- the stored lines, and SQLite's JSON objects beside Python's ---------------------------------

STAMPS = [1764756000.0, 1764756000.4995, 1764756000.9996, 1764756059.99999949,
          1764756000.1234565, 1711846799.75, 1711846800.25, 1e9 + 0.5e-6]


def test_stored_lines_and_sqlites_json_objects_are_pythons(tmp_path):
    """Lines are written when runs end; SQLite writes the JSON objects of ended runs, with
    the same times (rounded to the microsecond alike) and values as Python's."""
    store = Store(tmp_path / "jobs.db")
    with store.transaction():
        for i, t in enumerate(STAMPS):
            Records(store).add_run(Job(
                id=i + 1, status=("done", "killed", "lost")[i % 3], command=f"cmd 'é' {i}",
                cwd="/w", n_cores=i + 1, mem=(5.0, 1.5, 0.25, 100.0)[i % 4],
                node=None if i == 2 else f"node{i}", t_queue=t - 3600.5,
                t_start=None if i == 2 else t - 100.25, t_end=t,
                exit_code=None if i % 4 == 1 else i, signal=9 if i % 4 == 1 else None,
                reason="time limit 00:10:00" if i == 1 else None,
                time_limit=600 if i % 2 else None, cpu=None if i == 2 else 39.5 + i,
                peak_mem=None if i == 2 else round(i / 7, 6)))
    records = [dict(zip(RUN_FIELDS, row, strict=True)) for row in store.runs({}, None, None)]
    assert [(r["job"], r["run"]) for r in records] == [(i + 1, 1) for i in range(8)]
    assert store.runs({}, None, None, "line") == \
        [history_view.render([r], 0.0) for r in records]
    by_sqlite = store.runs({}, None, None, jsonout.SQL_RUN)
    assert [json.loads(t) for t in by_sqlite] == [jsonout.run(r) for r in records]
    assert [list(json.loads(t)) for t in by_sqlite] == [[*RUN_FIELDS, "elapsed"]] * 8
    store.close()
