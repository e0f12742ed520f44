"""Whole-node jobs (``qpy sub --exclusive``, ``#QPY exclusive=true``) with the embedded
default on this machine: real daemons, real supervisors, real jobs.

A whole-node job waits until nothing runs on a node that fits it, then takes all of the
node: its record, its fair-share count, ``QPY_N_CORES`` and the thread variables say the
node's cores, it is pinned to the node's CPUs, and no other job starts there until it
ends. Smaller jobs behind it in the queue still start on what is free meanwhile.
"""

from __future__ import annotations

import json

from conftest import NODE, wait_for
from test_limits import CPUS, SEE, embedded_node, seen

from qpy import wire

GATE = "while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done"


def go(qpy, *jobs: int) -> None:
    for job in jobs:
        (qpy.work / f"go_{job}").touch()


def node(qpy) -> dict:
    data = json.loads(qpy.run("status", "--json").stdout)
    found = [n for n in data["nodes"] if n["name"] == NODE]
    assert len(found) == 1, data["nodes"]
    mine = [u["used"] for u in data["users"] if u["user"] == wire.whoami()]
    return {**found[0], "user_used": mine[0] if mine else 0}


def test_an_exclusive_job_waits_for_an_empty_node_and_takes_all_of_it(qpy):
    embedded_node(qpy, f"cores=2 cpu_lock={qpy.root}/cpus.lock")
    first = qpy.sub("-m", "0.1", "sh", "-c", GATE)
    qpy.wait_status(first, "running")
    whole = qpy.sub("--exclusive", "-m", "0.1", "sh", "-c",
                    f"echo $QPY_N_CORES > cores_$QPY_JOB_ID; {SEE}")
    behind = qpy.sub("-m", "0.1", "sh", "-c", GATE)
    qpy.wait_status(behind, "running")  # the free core goes to the job behind ...
    assert qpy.job(whole)["status"] == "queue"  # ... the whole-node job waits
    log = qpy.home / "embedded" / "multiuser.log"
    wait_for(lambda: f"waits: job {whole} (1 core, 0.1 GB): no node with 1+ cores and 0.1+ GB "
                     "is empty (whole node)" in log.read_text(), what="the refusal logged")
    go(qpy, first, behind)
    record = qpy.wait_status(whole, "running")
    size = node(qpy)
    assert (record["n_cores"], record["mem"], record["exclusive"]) == (2, size["mem"], True)
    assert (size["used_cores"], size["user_used"]) == (2, 2)  # fair share counts it all
    assert seen(qpy, whole, "cores") == ["2"]
    assert seen(qpy, whole, "threads") == ["2", "2", "2"]
    assert seen(qpy, whole, "cpus") == [str(c) for c in CPUS[:2]]
    later = qpy.sub("-m", "0.1", "true")
    go(qpy, whole)
    ended = qpy.wait_status(whole)
    assert (ended["status"], ended["exit_code"]) == ("done", 0)
    started = qpy.wait_status(later)
    assert started["status"] == "done" and started["t_start"] >= ended["t_end"]
    wait_for(lambda: node(qpy)["used_cores"] == 0, what="the node to be given back")


def test_the_directive_asks_for_a_whole_node(qpy):
    embedded_node(qpy, f"cores=2 cpu_lock={qpy.root}/cpus.lock")
    script = qpy.work / "whole.sh"
    script.write_text("#!/bin/sh\n#QPY exclusive=true\necho $QPY_N_CORES\n")
    script.chmod(0o755)
    job = qpy.sub("./whole.sh")
    record = qpy.wait_status(job)
    assert (record["status"], record["exclusive"], record["n_cores"]) == ("done", True, 2)
    assert (qpy.work / f"job_{job}.out").read_text() == "2\n"
    plain = qpy.wait_status(qpy.sub("true"))
    assert (plain["exclusive"], plain["n_cores"]) == (False, 1)


def test_an_exclusive_job_larger_than_every_node_is_refused(qpy):
    embedded_node(qpy, f"cores=2 cpu_lock={qpy.root}/cpus.lock")
    proc = qpy.run("sub", "--exclusive", "-n", "3", "true", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith("qpy: job refused: ") and len(proc.stderr.splitlines()) == 1
