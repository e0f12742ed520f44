"""``qpy finish`` / ``qpy restart``, and crashes of the master and of the embedded multiuser.

The promise under test: jobs are supervised outside the master, so a master that stops (or
is SIGKILLed) loses nothing. Running jobs go on, their ends are recorded by the next master
with the right exit codes, queued jobs run later, and no job ever runs twice.

Jobs are *gated*: each appends its ID to ``ran_<ID>`` (so a second run would show), creates
``started_<ID>`` and then waits for a ``go`` file before exiting with ``10 + ID``. A job that
finds ``go`` missing when it starts writes ``early_<ID>``: for a job that had to wait for a
free core, that would mean it started while the cores were still taken.
"""

from __future__ import annotations

import json
import os
import signal
import socket

from conftest import job_processes, pid_alive, start_daemons, supervisors, wait_for

from qpy import paths, wire

CORES = len(os.sched_getaffinity(0))


def gated(go: str) -> str:
    return ("echo $QPY_JOB_ID >> ran_$QPY_JOB_ID; "
            f"[ -e {go} ] || touch early_$QPY_JOB_ID; touch started_$QPY_JOB_ID; "
            f"while [ ! -e {go} ]; do sleep 0.05; done; exit $((10 + QPY_JOB_ID))")


SHARED = gated("go")  # every job waits for the same file
OWN = gated("go_$QPY_JOB_ID")  # each job waits for its own file


def job_procs(qpy, job_id: int) -> list[int]:
    """Every live process of job ``job_id`` (they all carry its QPY_JOB_ID)."""
    tag = f"QPY_JOB_ID={job_id}".encode()
    return job_processes(qpy, lambda argv, env: tag in env)


def job_leader(qpy, job_id: int) -> int | None:
    """The job's main process: the one process of the job that leads its session (the
    short-lived children of its polling loop do not)."""
    leaders = [p for p in job_procs(qpy, job_id) if _sid(p) == p]
    assert len(leaders) <= 1, leaders
    return leaders[0] if leaders else None


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def marker_procs(qpy, *argv: str) -> list[int]:
    wanted = [a.encode() for a in argv]
    return job_processes(qpy, lambda cmd, env: cmd == wanted)


def supervisor(qpy, job_id: int) -> int | None:
    """PID of the job's supervisor as it recorded it, if it is still alive."""
    pid = supervisors(qpy.home / "run").get(job_id)
    return pid if pid and pid_alive(pid) else None


def wait_started(qpy, *ids: int) -> None:
    for job in ids:
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")


def submit_full_machine(qpy, command: str, waiting: int) -> tuple[list[int], list[int]]:
    """One job per core, all running, then ``waiting`` more that stay queued."""
    running = [qpy.sub("sh", "-c", command) for _ in range(CORES)]
    wait_started(qpy, *running)
    queued = [qpy.sub("sh", "-c", command) for _ in range(waiting)]
    assert [qpy.job(j)["status"] for j in queued] == ["queue"] * waiting
    return running, queued


def user_status(qpy, check: bool = True) -> dict | None:
    proc = qpy.run("status", "--json", check=check)
    if proc.returncode != 0:
        return None
    users = json.loads(proc.stdout)["users"]
    assert len(users) == 1, users
    return users[0]


def assert_all_ran_once_and_done(qpy, ids: list[int]) -> None:
    jobs = qpy.wait_all_finished()
    assert sorted(j["id"] for j in jobs) == sorted(ids), "a job was lost or duplicated"
    for job in jobs:
        assert (job["id"], job["status"], job["exit_code"], job["signal"]) == \
            (job["id"], "done", 10 + job["id"], None), job
        ran = (qpy.work / f"ran_{job['id']}").read_text()
        assert ran == f"{job['id']}\n", f"job {job['id']} ran {ran.count(chr(10))} times"


# -- finish --------------------------------------------------------------------------------


def test_finish_stops_the_master_and_the_personal_multiuser(qpy):
    """On a single machine nothing is left running after ``qpy finish``: the personal
    multiuser stops too, since no master uses it (issue 12 item 12)."""
    pid, multiuser = start_daemons(qpy)
    assert pid and multiuser
    proc = qpy.run("finish")
    assert proc.stdout == "Stopping qpy-master driver.\nStopping the personal multiuser.\n"
    wait_for(lambda: not pid_alive(pid), what="the master to exit")
    wait_for(lambda: not pid_alive(multiuser), what="the personal multiuser to exit")
    assert qpy.pid("master") is None and qpy.pid("multiuser") is None
    assert not (qpy.home / "master.sock").exists()

    again = qpy.run("finish")
    assert again.stdout == "qpy-master is not running.\n"
    assert qpy.pid("master") is None  # finish does not start a master to stop it

    assert qpy.jobs() == []  # any other command starts it again
    assert qpy.pid("master") not in (None, pid)
    assert qpy.sub("true") and qpy.wait_status(1)["status"] == "done"
    assert qpy.pid("multiuser") not in (None, multiuser)


def test_restart_keeps_the_personal_multiuser(qpy):
    _, multiuser = start_daemons(qpy)
    assert qpy.run("restart").stdout == "Stopping qpy-master driver.\nqpy-master started.\n"
    assert qpy.pid("multiuser") == multiuser


def test_the_single_machine_is_named_after_the_host(qpy):
    """``-a $(hostname)`` selects this machine and QPY_NODE names it; ``localhost`` is
    still one of its attributes (issue 12 item 12)."""
    host = socket.gethostname()
    job = qpy.sub("-a", host, "sh", "-c", 'echo "$QPY_NODE"')
    assert qpy.wait_status(job)["node"] == host
    assert (qpy.work / f"job_{job}.out").read_text() == f"{host}\n"
    other = qpy.sub("-a", "localhost", "true")
    assert qpy.wait_status(other)["node"] == host
    nodes = json.loads(qpy.run("status", "--json").stdout)["nodes"]
    assert [(n["name"], n["attrs"]) for n in nodes] == [(host, ["localhost"])]


def test_an_older_personal_multiuser_is_renamed_and_no_bundle_is_written(qpy):
    """Homes set up by older versions: the node called localhost gets the host's name,
    and the personal multiuser's address and key that were copied into the bundle
    files are not taken for a cluster's."""
    start_daemons(qpy)
    qpy.run("finish")
    embedded = qpy.home / "embedded"
    (embedded / "nodes").write_text("# the embedded default: this machine only\nlocalhost\n")
    key = (embedded / "keys" / wire.whoami()).read_text()
    for name, value in (("multiuser_connection_address", "127.0.0.1\n"),
                        ("multiuser_connection_port",
                         (embedded / "multiuser_connection_port").read_text()),
                        ("multiuser_connection_conn_key", key)):
        paths.write_private(qpy.home / name, value)
    before = {name: (qpy.home / name).read_bytes() for name in paths.BUNDLE}
    status = json.loads(qpy.run("status", "--json").stdout)
    assert status["allocator"]["kind"] == "personal"
    assert [n["name"] for n in status["nodes"]] == [socket.gethostname()]
    assert {name: (qpy.home / name).read_bytes() for name in paths.BUNDLE} == before


def test_running_job_outlives_finish_and_its_end_is_recorded(qpy):
    job = qpy.sub("sh", "-c", OWN)
    wait_started(qpy, job)
    leader = job_leader(qpy, job)
    assert leader
    master = qpy.pid("master")

    assert qpy.run("finish").stdout.startswith("Stopping qpy-master driver.\n")
    wait_for(lambda: not pid_alive(master), what="the master to exit")
    assert pid_alive(leader), "finish ended the running job"

    # the job ends while no master runs
    (qpy.work / f"go_{job}").touch()
    wait_for(lambda: not job_procs(qpy, job) and supervisor(qpy, job) is None,
             what="the job to end")
    assert qpy.pid("master") is None

    record = qpy.wait_status(job)  # this command starts the master again
    assert (record["status"], record["exit_code"], record["signal"]) == ("done", 10 + job, None)
    assert (qpy.work / f"ran_{job}").read_text() == f"{job}\n"


def test_queued_jobs_wait_while_the_master_is_stopped(qpy):
    running, queued = submit_full_machine(qpy, SHARED, 2)
    qpy.run("finish")
    (qpy.work / "go").touch()
    wait_for(lambda: not any(job_procs(qpy, j) or supervisor(qpy, j) for j in running),
             what="the running jobs to end")
    assert not any((qpy.work / f"started_{j}").exists() for j in queued)
    assert_all_ran_once_and_done(qpy, running + queued)  # restarts the master


# -- restart -------------------------------------------------------------------------------


def test_restart_keeps_running_and_queued_jobs(qpy):
    running, queued = submit_full_machine(qpy, OWN, 2)
    leaders = {j: job_leader(qpy, j) for j in running}
    old = qpy.pid("master")

    proc = qpy.run("restart")
    assert proc.stdout == "Stopping qpy-master driver.\nqpy-master started.\n"
    assert not pid_alive(old)
    assert qpy.pid("master") not in (None, old)

    status = {j["id"]: j["status"] for j in qpy.jobs()}
    assert status == {**{j: "running" for j in running}, **{j: "queue" for j in queued}}
    for job, leader in leaders.items():
        assert leader and pid_alive(leader), f"job {job} was disturbed"

    for job in running + queued:
        (qpy.work / f"go_{job}").touch()
    assert_all_ran_once_and_done(qpy, running + queued)


def test_restart_without_a_running_master(qpy):
    qpy.run("check")
    qpy.run("finish")
    assert qpy.pid("master") is None
    proc = qpy.run("restart")
    assert proc.stdout == "qpy-master started.\n"
    assert qpy.pid("master")
    assert qpy.wait_status(qpy.sub("true"))["status"] == "done"


def test_status_works_as_the_first_command(qpy):
    """On a fresh home the first command starts the master and the embedded multiuser."""
    user = user_status(qpy)
    assert user["used"] == 0 and user["queue"] == 0


# -- master crashes ------------------------------------------------------------------------


def test_master_sigkill_loses_nothing_and_runs_nothing_twice(qpy):
    running, queued = submit_full_machine(qpy, SHARED, 3)
    leaders = {j: job_leader(qpy, j) for j in running}
    supervisors = {j: supervisor(qpy, j) for j in running}
    old = qpy.kill_daemon("master", signal.SIGKILL)

    for job in running:
        assert leaders[job] and pid_alive(leaders[job]), f"job {job} died"
        assert supervisors[job] and pid_alive(supervisors[job])

    # any command starts a new master, which finds everything again
    status = {j["id"]: j["status"] for j in qpy.jobs()}
    assert qpy.pid("master") not in (None, old)
    assert status == {**{j: "running" for j in running}, **{j: "queue" for j in queued}}
    # the new master is registered with the running jobs counted: no queued job may start
    wait_for(lambda: (user_status(qpy, check=False) or {}).get("used") == CORES,
             what="the multiuser to count the running jobs")
    assert [qpy.job(j)["status"] for j in queued] == ["queue"] * len(queued)

    (qpy.work / "go").touch()
    assert_all_ran_once_and_done(qpy, running + queued)
    assert not any((qpy.work / f"early_{j}").exists() for j in queued)


def test_job_that_ends_while_the_master_is_dead_is_recorded(qpy):
    running, queued = submit_full_machine(qpy, OWN, 1)
    first, rest = running[0], running[1:]
    qpy.kill_daemon("master", signal.SIGKILL)

    (qpy.work / f"go_{first}").touch()
    wait_for(lambda: not job_procs(qpy, first) and supervisor(qpy, first) is None,
             what="the first job to end")
    assert all(job_leader(qpy, j) for j in rest)
    assert qpy.pid("master") is None

    record = qpy.wait_status(first)  # starts the master
    assert (record["status"], record["exit_code"], record["signal"]) == \
        ("done", 10 + first, None)
    # its core is free again: the queued job starts while the others still run
    wait_started(qpy, *queued)
    assert [qpy.job(j)["status"] for j in rest] == ["running"] * len(rest)

    for job in rest + queued:
        (qpy.work / f"go_{job}").touch()
    assert_all_ran_once_and_done(qpy, running + queued)


def test_master_sigkill_after_kill_request_still_records_killed(qpy):
    qpy.run("config", "killGrace", "1")
    job = qpy.sub("trap '' TERM; sleep 9031")
    wait_for(lambda: marker_procs(qpy, "sleep", "9031"), what="the job to start")
    assert qpy.run("kill", str(job)).stdout == "1 job will be killed.\n"
    qpy.kill_daemon("master", signal.SIGKILL)

    wait_for(lambda: not job_procs(qpy, job) and supervisor(qpy, job) is None,
             what="the job to be killed")
    record = qpy.wait_status(job)
    assert (record["status"], record["signal"]) == ("killed", signal.SIGKILL)


def test_master_sigkill_with_only_queued_jobs(qpy):
    qpy.run("ctrlQueue", "pause")
    jobs = [qpy.sub("sh", "-c", SHARED) for _ in range(3)]
    (qpy.work / "go").touch()
    qpy.kill_daemon("master", signal.SIGKILL)
    assert [j["status"] for j in qpy.jobs()] == ["queue"] * 3
    qpy.run("ctrlQueue", "continue")
    assert_all_ran_once_and_done(qpy, jobs)


# -- multiuser crash -----------------------------------------------------------------------


def test_multiuser_sigkill_master_reconnects_and_all_jobs_complete(qpy):
    running, queued = submit_full_machine(qpy, SHARED, 2)
    master = qpy.pid("master")
    old = qpy.kill_daemon("multiuser", signal.SIGKILL)

    # the master starts the embedded multiuser again by itself, without any command
    wait_for(lambda: qpy.pid("multiuser") not in (None, old), what="a new multiuser")
    wait_for(lambda: (user_status(qpy, check=False) or {}).get("used") == CORES,
             what="the new multiuser to count the running jobs")
    assert qpy.pid("master") == master
    assert [qpy.job(j)["status"] for j in running] == ["running"] * len(running)
    assert [qpy.job(j)["status"] for j in queued] == ["queue"] * len(queued)

    (qpy.work / "go").touch()
    assert_all_ran_once_and_done(qpy, running + queued)
    assert not any((qpy.work / f"early_{j}").exists() for j in queued)
    assert qpy.pid("master") == master

    def released():
        user = user_status(qpy)
        return user if user["used"] == 0 and user["queue"] == 0 else None

    wait_for(released, what="the user's cores to be released")


OLD_JOBS_TABLE = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL,
    command TEXT NOT NULL, cwd TEXT NOT NULL, n_cores INTEGER NOT NULL, mem REAL NOT NULL,
    attr TEXT, node TEXT, address TEXT, t_queue REAL NOT NULL, t_start REAL, t_end REAL,
    exit_code INTEGER, signal INTEGER, reason TEXT, script_copy TEXT, run_command TEXT,
    env_id INTEGER, pid INTEGER, kill_requested INTEGER NOT NULL DEFAULT 0,
    qpos INTEGER NOT NULL DEFAULT 0);
"""


def test_a_job_queued_by_an_older_qpy_runs_after_the_upgrade(qpy):
    """A store from before the ``requeue`` and ``umask`` columns: the master adds them,
    and the queued job runs with umask 022, as jobs did then."""
    import sqlite3
    import stat

    qpy.home.mkdir(mode=0o700)
    db = sqlite3.connect(qpy.home / "jobs.db")
    db.executescript(OLD_JOBS_TABLE)
    db.execute("INSERT INTO jobs (status, command, cwd, n_cores, mem, t_queue)"
               " VALUES ('queue', 'umask', ?, 1, 1.0, 0)", (str(qpy.work),))
    db.commit()
    db.close()
    record = qpy.wait_status(1)
    assert (record["status"], record["exit_code"]) == ("done", 0), record
    assert (qpy.work / "job_1.out").read_text() == "0022\n"
    assert stat.S_IMODE((qpy.work / "job_1.out").stat().st_mode) == 0o644
