"""What a node enforces of a job's allocation (qpy/limits.py, qpy/cgroups.py), with the
embedded default on this machine: real jobs, real supervisors, real daemons.

* memory: a job that allocates past its ``-m`` is killed by the node's watchdog (this
  machine offers no delegated memory cgroup to root unless one is configured) with the
  reason ``memory limit X GB (peak Y GB)``; ``qpy status`` says which mechanism is in force;
  ``rlimit_as=true`` adds ``ulimit -v``;
* cores: two 1-core jobs run on different CPUs, each pinned to one, with the thread
  variables set to 1 unless the user set them; the CPUs stay distinct after the master
  and the multiuser are SIGKILLed and restarted, because the supervisors hold them.

Each test gives its node a lock file of its own (``cpu_lock=``), so jobs of other test
runs on this machine do not take its CPUs. The multi-user, cgroup and remote cases are in
tests/test_limits_nodes.py.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import wait_for

from qpy import wire

CPUS = sorted(os.sched_getaffinity(0))
ALLOCATE = "python3 -c 'x = b\"1\" * (300 << 20); import time; time.sleep(300)'"
# a gated job that writes what it sees: its CPUs and thread variables, then waits
SEE = ("python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))' > cpus_$QPY_JOB_ID; "
       "echo $OMP_NUM_THREADS $MKL_NUM_THREADS $OPENBLAS_NUM_THREADS > threads_$QPY_JOB_ID; "
       "while [ ! -e go_$QPY_JOB_ID ]; do sleep 0.05; done")


def embedded_node(qpy, settings: str) -> None:
    """The embedded multiuser's one node, this machine, with ``settings`` from the nodes
    file (written before the first qpy command starts the daemons)."""
    admin = qpy.home / "embedded"
    admin.mkdir(parents=True, mode=0o700)
    os.chmod(qpy.home, 0o700)
    (admin / "nodes").write_text(f"localhost {settings}\n")
    (admin / "allowed_users").write_text(f"{wire.whoami()}\n")
    (admin / "distribution_rules").write_text("even\n")


def seen(qpy, job: int, what: str) -> list[str]:
    path = qpy.work / f"{what}_{job}"
    wait_for(lambda: path.exists() and path.read_text().endswith("\n"), what=f"{path.name}")
    return path.read_text().split()


def memory_line(qpy) -> str:
    lines = [x for x in qpy.run("status").stdout.splitlines() if x.startswith("Memory limits")]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_job_past_its_memory_is_killed_with_the_reason(qpy):
    embedded_node(qpy, f"cgroup=off cpu_lock={qpy.root}/cpus.lock")
    job = qpy.sub("-m", "0.05", "sh", "-c", f"echo started; {ALLOCATE}; echo survived")
    record = qpy.wait_status(job, "killed", "done")
    assert record["status"] == "killed", record
    assert record["signal"] == 9 and record["exit_code"] is None, record
    found = re.fullmatch(r"memory limit 0\.05 GB \(peak ([0-9.]+) GB\)", record["reason"])
    assert found, record["reason"]
    assert 0.05 < float(found.group(1)) < 1, record["reason"]  # past the limit, caught early
    assert (qpy.work / f"job_{job}.out").read_text() == "started\n"  # the whole tree ended
    assert memory_line(qpy) == "Memory limits: watchdog (localhost)"


def test_the_watchdog_adds_up_the_whole_process_tree(qpy):
    """Two processes of one job, each well within the job's memory, together past it."""
    embedded_node(qpy, f"cgroup=off cpu_lock={qpy.root}/cpus.lock")
    half = "python3 -c 'x = b\"1\" * (30 << 20); import time; time.sleep(300)'"
    job = qpy.sub("-m", "0.05", "sh", "-c", f"{half} & {half} & wait")
    record = qpy.wait_status(job)
    assert (record["status"], record["signal"]) == ("killed", 9), record
    assert record["reason"].startswith("memory limit 0.05 GB (peak "), record


def test_a_job_within_its_memory_runs_to_its_end(qpy):
    embedded_node(qpy, f"cpu_lock={qpy.root}/cpus.lock")
    job = qpy.sub("-m", "1", "python3", "-c",
                  "x = b'1' * (100 << 20); import time; time.sleep(1); print(len(x) >> 20)")
    record = qpy.wait_status(job)
    assert (record["status"], record["exit_code"], record["reason"]) == ("done", 0, None)
    assert (qpy.work / f"job_{job}.out").read_text() == "100\n"


def test_rlimit_as_is_an_admin_option(qpy):
    embedded_node(qpy, f"cgroup=off rlimit_as=true cpu_lock={qpy.root}/cpus.lock")
    job = qpy.sub("-m", "0.2", "sh", "-c", f"ulimit -v; {ALLOCATE}")
    record = qpy.wait_status(job)
    # the allocation fails inside Python (MemoryError), so the job ends on its own
    assert (record["status"], record["exit_code"]) == ("done", 1), record
    assert (qpy.work / f"job_{job}.out").read_text() == f"{int(0.2 * 1024 ** 3) // 1024}\n"
    assert "MemoryError" in (qpy.work / f"job_{job}.err").read_text()
    assert memory_line(qpy) == "Memory limits: watchdog + RLIMIT_AS (localhost)"


def test_thread_variables_follow_the_cores_unless_the_user_set_them(qpy):
    embedded_node(qpy, f"cpu_lock={qpy.root}/cpus.lock")
    cores = min(2, len(CPUS))
    env = {**qpy.env, "MKL_NUM_THREADS": "7"}
    job = int(qpy.run("sub", "-n", str(cores), "sh", "-c", SEE, env=env).stdout.split()[1])
    assert seen(qpy, job, "threads") == [str(cores), "7", str(cores)]
    assert len(seen(qpy, job, "cpus")) == cores
    (qpy.work / f"go_{job}").touch()
    assert qpy.wait_status(job)["status"] == "done"


def test_a_node_with_more_cores_than_cpus_still_pins_each_job(qpy):
    """Once every CPU is held, a job shares one with another job: it is still pinned to
    as many CPUs as it has cores, and the CPUs are spread over the jobs."""
    embedded_node(qpy, f"cores={len(CPUS) + 1} cpu_lock={qpy.root}/cpus.lock")
    jobs = [qpy.sub("-m", "0.1", "sh", "-c", SEE) for _ in range(len(CPUS) + 1)]
    cpus = [seen(qpy, job, "cpus") for job in jobs]
    assert all(len(c) == 1 for c in cpus), cpus
    assert sorted({c[0] for c in cpus}) == [str(c) for c in CPUS], cpus
    for job in jobs:
        (qpy.work / f"go_{job}").touch()
    assert all(qpy.wait_status(j)["status"] == "done" for j in jobs)


@pytest.mark.skipif(len(CPUS) < 2, reason="needs a node with at least 2 CPUs")
def test_one_core_jobs_get_distinct_cpus_also_after_the_daemons_are_killed(qpy):
    embedded_node(qpy, f"cores=2 cpu_lock={qpy.root}/cpus.lock")
    first, second = qpy.sub("sh", "-c", SEE), qpy.sub("sh", "-c", SEE)
    cpus = {job: seen(qpy, job, "cpus") for job in (first, second)}
    assert all(len(c) == 1 for c in cpus.values()), cpus
    assert cpus[first] != cpus[second], cpus
    assert seen(qpy, first, "threads") == seen(qpy, second, "threads") == ["1", "1", "1"]

    # both daemons die; the supervisors, which hold the CPUs, do not
    qpy.kill_daemon("master")
    qpy.kill_daemon("multiuser")
    (qpy.work / f"go_{first}").touch()  # its CPU is free again; the second's is not
    third = qpy.sub("sh", "-c", SEE)  # starts new daemons
    assert qpy.wait_status(first)["status"] == "done"
    assert seen(qpy, third, "cpus") == cpus[first]
    assert qpy.job(second)["status"] == "running"
    for job in (second, third):
        (qpy.work / f"go_{job}").touch()
    assert [qpy.wait_status(j)["status"] for j in (second, third)] == ["done", "done"]
