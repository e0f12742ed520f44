"""Faults injected into real daemons running real jobs; each test asserts that nothing is lost.

* The master is SIGKILLed at random moments during a burst of 500 submissions and kills:
  every accepted job exists exactly once, ends exactly once, ran at most once, and has its
  exit code (or the signal that ended it) recorded.
* The multiuser, or the multiuser and the masters at once, are SIGKILLed again and again
  while jobs run and wait (this machine's embedded multiuser, and the shared multiuser of
  real Unix accounts): the masters register again, the allocations equal the running jobs
  exactly, nothing is overcommitted, and every job ends once with its exit code.
* A job whose output directory is full, read-only, unwritable or gone gets a clear reason
  in ``qpy check --json`` and the daemons keep serving.
* A job that ignores SIGTERM ends by SIGKILL after ``killGrace`` even while both daemons
  are down.
* Two races made reliable: a kill that reaches a job's node while its supervisor is still
  being set up, and a job end reported while a restarted master's registration is in
  flight (the multiuser kept busy by an admin reload of a long ``allowed_users``).

Each test counts what it injected and what ran in ``suite_stats`` (the summary line at the
end of the run); a lost job is counted there and fails the test. Jobs are gated by files,
never by sleeps in the tests; every wait has a limit that only guards against a hang.
The seed of the random burst is printed on failure and can be set with QPY_FAULT_SEED.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from multiprocessing import AuthenticationError
from pathlib import Path

import pytest
import suite_stats
from conftest import QPY, WAIT, pid_alive, start_daemons, wait_for
from multiuser import GATED, Cluster, Jobs, started_cluster, unavailable

from qpy import client, paths, wire
from qpy.selection import FINISHED

CORES = len(os.sched_getaffinity(0))
SETTLE = 120.0  # only a guard against a hang
BURST = 500
MASTER_KILLS = 10  # 7 while the burst is submitted, 3 while its queue drains
DRAIN_KILLS = 3
STUBBORN = 12

# A gated job that also counts its runs: a second run would show as a second line.
ONCE = "echo $QPY_JOB_ID >> ran_$QPY_JOB_ID; " + GATED


def expected_exit(job: int) -> int:
    return 10 + job % 100


# -- helpers: daemons, allocations, processes -------------------------------------------------


def daemon_pid(pid_file: Path, module: str) -> int | None:
    """The PID in ``pid_file`` if that process is alive and really is ``module`` (a PID
    file left by a killed daemon may name a reused PID)."""
    try:
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if module.encode() in argv and pid_alive(pid) else None


def sigkill_at_once(pids: list[int]) -> None:
    """SIGKILL every process in ``pids`` back to back, then wait until all are gone."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_for(lambda p=pid: not pid_alive(p), WAIT, f"process {pid} to die")
    suite_stats.add("faults_injected", len(pids))


def admin_variables(admin_home: Path) -> dict | None:
    """``qpy-admin variables`` over the wire with the admin key (we are root), or None
    while the multiuser cannot be reached."""
    try:
        conn = client.connect_bundle(admin_home, "@admin", admin_home / "admin.key")
        reply = wire.exchange(conn, {"type": "admin", "command": "variables", "args": []},
                              30.0, "the multiuser")
    except (OSError, EOFError, ValueError, wire.Refused, AuthenticationError):
        return None
    return reply["variables"]


def allocations(variables: dict, user: str) -> dict[int, tuple[str, int, float]]:
    jobs = variables["users"].get(user, {}).get("jobs", {})
    return {int(job): (v[0], int(v[1]), float(v[2])) for job, v in jobs.items()}


def running_records(records: list[dict]) -> dict[int, tuple[str, int, float]]:
    return {j["id"]: (j["node"], j["n_cores"], float(j["mem"]))
            for j in records if j["status"] == "running"}


def overcommitted(variables: dict) -> list[str]:
    """Nodes whose allocations exceed their cores or memory, as the multiuser counts them
    and as the sum of every user's allocations."""
    found = []
    per_node: dict[str, int] = defaultdict(int)
    for user in variables["users"].values():
        for node, cores, _ in user["jobs"].values():
            per_node[node] += cores
    for name, node in variables["nodes"].items():
        if node["used_cores"] > node["cores"] or per_node[name] > node["cores"] \
                or node["used_mem"] > node["mem"] + 1e-9:
            found.append(f"{name}: {per_node[name]} cores allocated, used_cores "
                         f"{node['used_cores']}, used_mem {node['used_mem']} of {node['cores']}"
                         f" cores, {node['mem']} GB")
    if sum(u["used"] for u in variables["users"].values()) > variables["total_cores"]:
        found.append(f"more cores used than the cluster has: {variables}")
    return found


def live_jobs(home_mark: str) -> set[int]:
    """QPY_JOB_IDs of live processes whose environment holds ``home_mark`` (QPY_HOME=...):
    the jobs that really run right now."""
    mark = home_mark.encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark not in environ:
            continue
        for entry in environ:
            if entry.startswith(b"QPY_JOB_ID=") and pid_alive(int(name)):
                found.add(int(entry[11:]))
    return found


def eventually(check, what: str, timeout: float = SETTLE):
    """Wait until ``check()`` returns (True, info); on timeout fail with the last info."""
    last: list = [None]

    def probe():
        ok, info = check()
        last[0] = info
        return info if ok else None

    try:
        return wait_for(probe, timeout, what)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}; last seen: {last[0]}") from None


def ran_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def account_gated(records: list[dict], submitted: list[int], work: Path) -> tuple[int, int]:
    """Count runs and lost jobs of gated jobs that were all released: each submitted job
    must exist once, be done with its own exit code and have run exactly once. Adds to the
    suite's counters and returns (runs, lost)."""
    by_id: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_id[record["id"]].append(record)
    runs, lost, problems = 0, 0, []
    for job in submitted:
        lines = ran_lines(work / f"ran_{job}")
        runs += len(lines)
        found = by_id.get(job, [])
        if len(found) != 1 or found[0]["status"] != "done" \
                or found[0]["exit_code"] != expected_exit(job):
            lost += 1
            problems.append(f"job {job}: {found}")
        if lines not in ([str(job)], []) or (found and found[0]["status"] == "done"
                                             and lines != [str(job)]):
            problems.append(f"job {job} ran {len(lines)} times")
    phantom = sorted(set(by_id) - set(submitted))
    if phantom:
        problems.append(f"jobs nobody submitted: {phantom}")
    suite_stats.add("jobs_run", runs)
    suite_stats.add("jobs_lost", lost)
    assert lost == 0 and not problems, problems[:20]
    return runs, lost


# -- the embedded default: one user, this machine -----------------------------------------------


def embedded_variables(qpy) -> dict | None:
    return admin_variables(qpy.home / "embedded")


def master_pid(qpy) -> int | None:
    return daemon_pid(qpy.home / "master.pid", "qpy_master")


def multiuser_pid(qpy) -> int | None:
    return daemon_pid(qpy.home / "embedded" / "multiuser.pid", "qpy_multiuser")


def submit_once(qpy) -> int:
    return qpy.sub("-m", "0.1", "sh", "-c", ONCE)


def settled(qpy, released: list[int], timeout: float = SETTLE):
    """The state every crash must come back to: released jobs recorded with their exit
    codes, every core busy while jobs wait, the multiuser's allocations exactly the running
    jobs, and those jobs' processes the only ones alive."""
    user = wire.whoami()

    def check():
        records = qpy.jobs()
        status = {j["id"]: j for j in records}
        ended = [(j, status[j]["status"], status[j]["exit_code"]) for j in released]
        running = running_records(records)
        waiting = [j["id"] for j in records if j["status"] == "queue"]
        variables = embedded_variables(qpy)
        alloc = allocations(variables, user) if variables else None
        live = live_jobs(f"QPY_HOME={qpy.home}")
        info = {"ended": ended, "running": running, "queued": waiting, "alloc": alloc,
                "live": live, "connected": variables and variables["connected"]}
        ok = (all(s == "done" and c == expected_exit(j) for j, s, c in ended)
              and len(running) == min(CORES, len(running) + len(waiting))
              and alloc == running and live == set(running)
              and variables["connected"] == [user]
              and all((qpy.work / f"started_{j}").exists() for j in running))
        return ok, {**info, "variables": variables}

    info = eventually(check, "the daemons to come back with allocations equal to the "
                             "running jobs", timeout)
    assert overcommitted(info["variables"]) == []
    return info


@pytest.mark.parametrize("victims", [("multiuser",), ("master", "multiuser")],
                         ids=["multiuser", "master+multiuser"])
def test_embedded_daemons_sigkilled_while_jobs_run_and_wait(qpy, victims):
    rounds = 3
    per_round = min(2, CORES)
    first = [submit_once(qpy) for _ in range(CORES)]
    for job in first:
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
    queued = [submit_once(qpy) for _ in range(per_round * rounds)]
    submitted = first + queued
    info = settled(qpy, [])
    released: list[int] = []

    for _ in range(rounds):
        running = sorted(info["running"])
        before, during = running[0], running[1:per_round]
        (qpy.work / f"go_{before}").touch()  # ends around the kill
        old = {"master": master_pid(qpy), "multiuser": multiuser_pid(qpy)}
        sigkill_at_once([old[name] for name in victims])
        for job in during:  # ends while the daemons are down
            (qpy.work / f"go_{job}").touch()
        released += [before, *during]
        if "master" in victims:
            assert master_pid(qpy) is None
            qpy.run("check")  # any command starts the master, which starts the multiuser
        wait_for(lambda o=old: multiuser_pid(qpy) not in (None, o["multiuser"]),
                 what="the master to start a new multiuser by itself")
        info = settled(qpy, released)
        if "master" in victims:
            assert master_pid(qpy) not in (None, old["master"])
        else:
            assert master_pid(qpy) == old["master"]  # it reconnected by itself

    (qpy.work / "go").touch()
    records = qpy.wait_all_finished(SETTLE)
    account_gated(records, submitted, qpy.work)
    eventually(lambda: ((v := embedded_variables(qpy)) is not None
                        and allocations(v, wire.whoami()) == {}
                        and v["users"][wire.whoami()]["used"] == 0, v),
               "every core to be released")


def test_job_end_reported_while_the_master_registers_frees_its_core(qpy):
    """A restarted master registers with the jobs it found running; a job whose end its
    launcher reports while that registration is still in flight must still have its core
    released. The multiuser is kept busy by an admin reload of a long ``allowed_users``
    (it holds the multiuser's lock), so the registration is reliably still in flight when
    the launcher reports the end of a job that finished while no master ran."""
    running = [submit_once(qpy) for _ in range(CORES)]
    for job in running:
        wait_for((qpy.work / f"started_{job}").exists, what=f"job {job} to start")
    waiting = submit_once(qpy)
    settled(qpy, [])
    admin = qpy.home / "embedded"
    allowed = (admin / "allowed_users").read_text()

    sigkill_at_once([master_pid(qpy)])
    (qpy.work / f"go_{running[0]}").touch()  # ends while no master runs
    wait_for(lambda: running[0] not in live_jobs(f"QPY_HOME={qpy.home}"),
             what=f"job {running[0]} to end")
    (admin / "allowed_users").write_text(allowed + "#\n" * 3_000_000)
    done = threading.Event()

    def distribute():
        conn = client.connect_bundle(admin, "@admin", admin / "admin.key")
        try:
            wire.exchange(conn, {"type": "admin", "command": "distribute", "args": []},
                          300.0, "the multiuser")
        finally:
            done.set()

    thread = threading.Thread(target=distribute, daemon=True)
    thread.start()
    try:
        qpy.run("check")  # a new master: it adopts the jobs and registers
    finally:
        wait_for(done.is_set, 300, "the admin reload to end")
        (admin / "allowed_users").write_text(allowed)
    suite_stats.add("faults_injected")

    info = settled(qpy, [running[0]], WAIT)  # its core went to the waiting job
    assert waiting in info["running"]
    (qpy.work / "go").touch()
    account_gated(qpy.wait_all_finished(SETTLE), [*running, waiting], qpy.work)


def test_sigterm_ignoring_job_is_sigkilled_while_both_daemons_are_down(qpy):
    qpy.run("config", "killGrace", "1")
    others = [submit_once(qpy) for _ in range(CORES - 1)]
    stubborn = qpy.sub("-m", "0.1", "sh", "-c", "echo $QPY_JOB_ID >> ran_$QPY_JOB_ID; "
                       "trap '' TERM; touch armed_$QPY_JOB_ID; while :; do sleep 0.05; done")
    for marker in [*(f"started_{j}" for j in others), f"armed_{stubborn}"]:
        wait_for((qpy.work / marker).exists, what=f"{marker} to appear")
    waiting = submit_once(qpy)
    assert qpy.job(waiting)["status"] == "queue"
    live = live_jobs(f"QPY_HOME={qpy.home}")
    assert stubborn in live

    assert qpy.run("kill", str(stubborn)).stdout == "1 job will be killed.\n"
    sigkill_at_once([master_pid(qpy), multiuser_pid(qpy)])
    # the job's supervisor escalates by itself: no daemon is needed for that
    wait_for(lambda: stubborn not in live_jobs(f"QPY_HOME={qpy.home}"),
             what="the stubborn job to be SIGKILLed after the grace period")

    record = qpy.wait_status(stubborn)  # starts both daemons again
    assert (record["status"], record["signal"], record["exit_code"]) == \
        ("killed", signal.SIGKILL, None)
    info = settled(qpy, [])  # its core went to the waiting job, exactly once
    assert waiting in info["running"]
    (qpy.work / "go").touch()
    records = [r for r in qpy.wait_all_finished(SETTLE) if r["id"] != stubborn]
    account_gated(records, [*others, waiting], qpy.work)
    assert ran_lines(qpy.work / f"ran_{stubborn}") == [str(stubborn)]


def test_command_connecting_while_the_master_dies_starts_a_new_master(qpy):
    """A command whose connection the master accepted into its backlog but never served
    (it died first) has asked nothing yet: it starts a new master and gets its answer,
    instead of failing with 'connection reset'."""
    job = qpy.sub("-m", "0.1", "true")
    master = master_pid(qpy)
    os.kill(master, signal.SIGSTOP)  # alive and listening, but serving nobody
    try:
        cli = subprocess.Popen([QPY, "check", "--json"], cwd=qpy.work, env=qpy.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        wait_for(lambda: _has_socket(cli.pid), WAIT, "the command to connect")
    finally:
        sigkill_at_once([master])
    out, err = cli.communicate(timeout=WAIT)
    assert (cli.returncode, err) == (0, ""), err
    assert [j["id"] for j in json.loads(out)["jobs"]] == [job]
    assert master_pid(qpy) not in (None, master)


def _has_socket(pid: int) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                return True
        except OSError:
            pass
    return False


def test_kill_just_after_start_is_neither_dropped_nor_lost(qpy):
    """A kill that reaches the node while the job's supervisor is still being set up must
    still kill the job: not be dropped (the job would run to its end although the user was
    told it will be killed) and not kill the supervisor before it records anything (the
    job would be reported lost, never having run)."""
    qpy.run("config", "killGrace", "0")
    conn = wire.connect(str(qpy.home / "master.sock"), wire.whoami(),
                        paths.read_key(qpy.home / "master.key"))
    wire.tune_socket(conn, 60.0)

    def call(msg: dict) -> dict:
        reply = wire.call(conn, msg, 60.0)
        assert reply.get("ok"), reply
        return reply

    expected = {}
    try:
        for _ in range(40):
            job = call({"type": "sub", "command": "exec sleep 10", "cwd": str(qpy.work),
                        "env": dict(qpy.env), "n_cores": 1, "mem": 0.1, "attr": None,
                        "copy": False, "script": None})["job"]
            deadline = time.monotonic() + WAIT  # only against a hang
            while call({"type": "check", "select": {"ids": [job]}})["jobs"][0]["status"] \
                    == "queue":  # kill it the moment the master has started it
                assert time.monotonic() < deadline, f"job {job} never started"
            reply = call({"type": "kill", "select": {"ids": [job]}})
            expected[job] = ("undone", None, None) if reply["undone"] else \
                ("killed", signal.SIGTERM, None)
    finally:
        conn.close()
    records = qpy.wait_all_finished(SETTLE)
    got = {r["id"]: (r["status"], r["signal"], r["exit_code"]) for r in records}
    lost = sum(r["status"] not in ("killed", "undone") for r in records)
    suite_stats.add("jobs_run", sum(r["t_start"] is not None for r in records))
    suite_stats.add("jobs_lost", lost)
    wrong = {r["id"]: (got[r["id"]], r["reason"]) for r in records
             if got[r["id"]] != expected.get(r["id"])}
    assert wrong == {}, f"{len(wrong)} of {len(expected)} kills went wrong (expected killed " \
        f"by SIGTERM): {wrong}"


# -- the burst: 500 submissions and kills, the master SIGKILLed at random moments -------------

DRIVER = r"""
import json, os, random, sys, traceback
from qpy.client import ClientError, request

plan = json.load(open(sys.argv[1]))
cwd = sys.argv[2]
rng = random.Random(int(sys.argv[3]))
env = dict(os.environ)
ids, armed_later = {}, []


def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def attempt(op, tag, call):
    try:
        call()
    except ClientError as exc:
        out(op=op, tag=tag, id=ids.get(tag), error=str(exc))
    except BaseException:
        out(op=op, tag=tag, id=ids.get(tag), crash=traceback.format_exc())


def sub(step):
    reply = request({"type": "sub", "command": step["command"], "cwd": cwd, "env": env,
                     "n_cores": 1, "mem": 0.1, "attr": None, "copy": False, "script": None})
    ids[step["tag"]] = reply["job"]
    if step["kind"] == "stubborn":
        armed_later.append(step["tag"])
    out(op="sub", tag=step["tag"], id=reply["job"])


def kill(op, tag, job):
    reply = request({"type": "kill", "select": {"ids": [job]}})
    out(op=op, tag=tag, id=job, undone=reply["undone"], killing=reply["killing"])


def kill_running():
    reply = request({"type": "check", "select": {"statuses": ["running"]}})
    running = [j["id"] for j in reply["jobs"]]
    if running:
        kill("kill-running", None, rng.choice(running))
    else:
        out(op="kill-running", tag=None, skipped=True)


for step in plan:
    tag = step.get("tag")
    if step["op"] == "sub":
        attempt("sub", tag, lambda: sub(step))
    elif step["op"] == "kill-running":
        attempt("kill-running", None, kill_running)
    elif tag in ids:
        attempt("kill", tag, lambda: kill("kill", tag, ids[tag]))
    else:
        out(op="kill", tag=tag, skipped=True)
    for tag in [t for t in armed_later if os.path.exists(os.path.join("armed", t))]:
        armed_later.remove(tag)  # it now ignores SIGTERM: kill it while it runs
        attempt("kill-armed", tag, lambda: kill("kill-armed", tag, ids[tag]))
"""

TRANSPORT = re.compile(r"(no reply from the qpy master|cannot talk to the qpy master|"
                       r"the qpy master (could not start|started but does not answer))")
NOTHING = "Nothing to do: required jobs not found."
TAG = re.compile(r"runs/(t\d+);")


def burst_command(tag: str, kind: str) -> str:
    mark = f"echo $QPY_JOB_ID >> runs/{tag}; "
    code = "exit $((QPY_JOB_ID % 97))"
    if kind == "short":
        return mark + "sleep 0.2; " + code
    if kind == "stubborn":  # ignores SIGTERM once armed; only a kill or 'release' ends it
        return (mark + f"trap '' TERM; touch armed/{tag}; "
                "while [ ! -e release ]; do sleep 0.05; done; " + code)
    return mark + code


def burst_plan(rng: random.Random) -> tuple[list[dict], dict[str, str]]:
    """500 submissions of mostly instant jobs, a few short ones and a few that ignore
    SIGTERM (the driver kills each once it is armed), with kills of random recent jobs
    (mostly still queued) and of random running jobs in between."""
    plan, kinds = [], {}
    stubborn = set(rng.sample(range(BURST), STUBBORN))
    for i in range(BURST):
        tag = f"t{i}"
        kinds[tag] = "stubborn" if i in stubborn else "short" if rng.random() < 0.05 \
            else "quick"
        plan.append({"op": "sub", "tag": tag, "kind": kinds[tag],
                     "command": burst_command(tag, kinds[tag])})
        if i and rng.random() < 0.06:
            plan.append({"op": "kill", "tag": f"t{rng.randint(max(0, i - 20), i - 1)}"})
        if rng.random() < 0.06:
            plan.append({"op": "kill-running"})
    return plan, kinds


def test_master_sigkilled_during_a_burst_of_submissions_and_kills(qpy):
    seed = int(os.environ.get("QPY_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    plan, kinds = burst_plan(rng)
    during = MASTER_KILLS - DRAIN_KILLS
    kill_points = set(rng.sample(range(1, len(plan)), during))
    for name in ("runs", "armed"):
        (qpy.work / name).mkdir()
    (qpy.root / "plan.json").write_text(json.dumps(plan))
    qpy.run("config", "killGrace", "0.5")

    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(qpy.root / "plan.json"), str(qpy.work), str(seed)],
        cwd=qpy.work, env=qpy.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(600, driver.kill)  # only against a hang
    guard.start()
    results, kills = [], 0
    try:
        for line in driver.stdout:
            results.append(json.loads(line))
            if len(results) in kill_points:
                kill_master(qpy, driver)
                kills += 1
        driver.wait()
    finally:
        guard.cancel()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    where = f"(seed {seed}; driver stderr: {driver.stderr.read()[-2000:]!r})"
    assert driver.returncode == 0 and len(results) >= len(plan), where
    assert kills == during

    # while the queue drains: kill the stubborn jobs not killed yet once they are armed,
    # and the master at random moments in between
    results += drain(qpy, rng, results, kinds)
    (qpy.work / "release").touch()  # a stubborn job whose kill was lost ends by itself
    records = qpy.wait_all_finished(300)
    lost, problems, runs = check_burst(qpy, results, records, kinds)
    suite_stats.add("jobs_run", runs)
    suite_stats.add("jobs_lost", lost)
    assert lost == 0, f"{lost} jobs lost {where}: {problems[:20]}"
    assert problems == [], f"{where}: {problems[:20]}"
    eventually(lambda: ((v := embedded_variables(qpy)) is not None
                        and allocations(v, wire.whoami()) == {}
                        and v["users"][wire.whoami()]["used"] == 0, v),
               "every core to be released")


def drain(qpy, rng: random.Random, results: list[dict], kinds: dict[str, str]) -> list[dict]:
    """Kill each accepted stubborn job that no kill reached yet once it is armed, by the
    CLI; SIGKILL the master (and start it again, as a user's next command would) at
    DRAIN_KILLS of those moments, or at random ones if there are too few."""
    killed = {j for r in results for j in (r.get("undone") or []) + (r.get("killing") or [])}
    accepted = {r["tag"]: r["id"] for r in results if r["op"] == "sub" and "error" not in r}
    todo = [(t, accepted[t]) for t in kinds
            if kinds[t] == "stubborn" and t in accepted and accepted[t] not in killed]
    moments = set(rng.sample(range(max(len(todo), DRAIN_KILLS)), DRAIN_KILLS))
    more: list[dict] = []
    qpy.run("check")  # a master, in case the last kill left none
    for i in range(max(len(todo), DRAIN_KILLS)):
        if i < len(todo):
            tag, job = todo[i]
            wait_for(lambda t=tag, j=job: (qpy.work / "armed" / t).exists()
                     or qpy.job(j)["status"] in FINISHED,  # a lost kill reply may have won
                     300, f"stubborn job {job} to run")
        if i in moments:
            sigkill_at_once([master_pid(qpy)])
            qpy.run("check")
        if i < len(todo):
            proc = qpy.run("kill", str(job), check=False)
            if proc.returncode == 0:
                assert proc.stdout == "1 job will be killed.\n", proc.stdout
                more.append({"op": "kill-armed", "tag": tag, "id": job, "undone": [],
                             "killing": [job]})
            else:
                assert proc.stderr == f"qpy: {NOTHING}\n", proc.stderr
    return more


def kill_master(qpy, driver: subprocess.Popen) -> None:
    """SIGKILL the running master (waiting for the driver, or us, to start one)."""

    def target():
        pid = master_pid(qpy)
        if pid is None and driver.poll() is not None:
            qpy.run("check")  # the driver is done: start one to kill
        return pid

    sigkill_at_once([wait_for(target, WAIT, "a master to kill")])


def check_burst(qpy, results: list[dict], records: list[dict],
                kinds: dict[str, str]) -> tuple[int, list[str], int]:
    """(jobs lost, other problems, runs) of the burst, from the driver's results, the
    master's records and the jobs' own run files."""
    problems = []
    accepted: dict[str, int] = {}
    unknown: set[str] = set()
    undone_by_kill, killed_by_kill = set(), set()
    for r in results:
        if r.get("skipped"):
            continue
        if "crash" in r:
            problems.append(f"the client crashed on {r['op']} {r['tag']}: {r['crash']}")
        elif "error" in r and not TRANSPORT.match(r["error"]) \
                and not (r["op"] != "sub" and r["error"] == NOTHING):
            problems.append(f"{r['op']} {r['tag']} refused: {r['error']}")
        if r["op"] == "sub":
            if r.get("id") is not None and "error" not in r:
                accepted[r["tag"]] = r["id"]
            else:
                unknown.add(r["tag"])  # the master may have stored it before it died
        elif r.get("undone") or r.get("killing"):
            undone_by_kill.update(r.get("undone") or [])
            killed_by_kill.update(r.get("killing") or [])

    by_tag: dict[str, list[dict]] = defaultdict(list)
    ids = [j["id"] for j in records]
    if len(ids) != len(set(ids)):
        problems.append("a job ID appears twice")
    for record in records:
        found = TAG.search(record["command"])
        if found is None or found.group(1) not in kinds:
            problems.append(f"a job nobody submitted: {record}")
            continue
        by_tag[found.group(1)].append(record)

    lost, runs = 0, 0
    for tag in kinds:
        found = by_tag.get(tag, [])
        lines = ran_lines(qpy.work / "runs" / tag)
        runs += len(lines)
        if tag in accepted and [j["id"] for j in found] != [accepted[tag]]:
            lost += 1
            problems.append(f"{tag} accepted as job {accepted[tag]}, found {found}")
            continue
        if tag not in accepted and len(found) > 1:
            problems.append(f"{tag} stored {len(found)} times: {found}")
            continue
        if not found:
            if lines:
                problems.append(f"{tag} ran without a record: {lines}")
            continue
        job = found[0]
        why = ended_wrongly(job, kinds[tag], lines,
                            armed=(qpy.work / "armed" / tag).exists())
        if why:
            problems.append(f"{tag} (job {job['id']}): {why}: {job}")
            if job["status"] not in FINISHED or why.startswith("no outcome"):
                lost += 1
        if job["id"] in undone_by_kill and (job["status"], lines) != ("undone", []):
            problems.append(f"job {job['id']} was removed from the queue, yet: {job}, "
                            f"ran {len(lines)} times")
        if job["id"] in killed_by_kill and job["status"] != "killed":
            problems.append(f"job {job['id']} was being killed, yet: {job}")
    return lost, problems, runs


def ended_wrongly(job: dict, kind: str, lines: list[str], armed: bool) -> str | None:
    """Why a burst job's record is not one clean end, or None. ``armed``: the job got as
    far as ignoring SIGTERM."""
    status, code, sig = job["status"], job["exit_code"], job["signal"]
    if len(lines) > 1:
        return f"ran {len(lines)} times"
    if lines and lines != [str(job["id"])]:
        return f"its run file names another job: {lines}"
    if status == "undone":
        return f"undone but ran {len(lines)} times" if lines or code is not None \
            or sig is not None else None
    if status not in ("done", "killed"):
        return f"no outcome: status {status}"
    if job["reason"] is not None:
        return f"reason {job['reason']!r}"
    if code is not None:
        if sig is not None or code != job["id"] % 97 or lines != [str(job["id"])]:
            return f"wrong exit code {code} (expected {job['id'] % 97})"
        return None
    if sig is None:
        return "no outcome: neither an exit code nor a signal"
    if status != "killed":
        return f"ended by signal {sig} but nobody killed it"
    if kind == "stubborn" and armed and sig != signal.SIGKILL:
        return f"ignored SIGTERM, yet ended by signal {sig}, not by SIGKILL after the grace"
    if sig not in (signal.SIGTERM, signal.SIGKILL):
        return f"ended by signal {sig}"
    return None


# -- output directories that cannot take the job's output ---------------------------------------


ROOT_REASON = None if os.geteuid() == 0 and shutil.which("mount") else \
    "mounting a small tmpfs needs root and mount(8)"


@pytest.fixture
def tmpfs(qpy):
    """``tmpfs(name, options)``: a fresh tmpfs mounted under the test's directory,
    unmounted at the end."""
    if ROOT_REASON:
        if os.environ.get("CI"):
            pytest.fail(ROOT_REASON)
        pytest.skip(ROOT_REASON)
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = qpy.root / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"qpytest-{name}",
                               str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"mount failed: {proc.stderr.strip()}"
        mounts.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounts):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Use up a small file system's inodes, then its blocks."""
    try:
        for i in range(1_000_000):
            (path / f"filler_{i}").touch()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    try:
        with open(path / "filler_0", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


def output_dir(qpy, tmpfs, case: str) -> Path:
    if case == "full":
        path = tmpfs("full", "size=64k,nr_inodes=16,mode=0755")
        fill(path)
    elif case == "read-only":
        path = tmpfs("ro", "ro,size=64k,mode=0755")
    else:  # removed: the submission directory is gone when the job starts
        path = qpy.root / "gone"
        path.mkdir()
    return path


@pytest.mark.parametrize("case, error", [
    ("full", errno.ENOSPC), ("read-only", errno.EROFS), ("removed", errno.ENOENT)],
    ids=["full", "read-only", "removed"])
def test_job_whose_output_directory_is_unusable_gets_a_clear_error(qpy, tmpfs, case, error):
    master, multiuser = start_daemons(qpy)
    path = output_dir(qpy, tmpfs, case)
    if case == "removed":
        qpy.run("ctrlQueue", "pause")
    jobs = [qpy.sub("-m", "0.1", "sh", "-c", "echo ran >> ran_$QPY_JOB_ID", cwd=path)
            for _ in range(3)]
    suite_stats.add("faults_injected")
    if case == "removed":
        path.rmdir()
        qpy.run("ctrlQueue", "continue")

    for job in jobs:
        record = qpy.wait_status(job)
        reason = record["reason"] or ""
        assert record["status"] in FINISHED and record["t_start"] is not None, record
        assert reason.startswith("failed to start: "), record
        assert os.strerror(error) in reason, record
        if case == "removed":
            assert str(path) in reason, record
        else:
            assert str(path / f"job_{job}.out") in reason, record
        assert (record["exit_code"], record["signal"]) == (None, None), record
        assert not (path / f"ran_{job}").exists()

    # the same daemons keep serving: a job elsewhere runs and the failed ones hold no core
    assert (master_pid(qpy), multiuser_pid(qpy)) == (master, multiuser)
    good = submit_once(qpy)
    (qpy.work / f"go_{good}").touch()
    assert qpy.wait_status(good)["exit_code"] == expected_exit(good)
    account_gated([qpy.job(good)], [good], qpy.work)
    eventually(lambda: ((v := embedded_variables(qpy)) is not None
                        and allocations(v, wire.whoami()) == {}, v),
               "every core to be released")
    assert (master_pid(qpy), multiuser_pid(qpy)) == (master, multiuser)


# -- the shared multiuser of real Unix accounts -------------------------------------------------

MU_REASON = unavailable()
SHARES = {"alice": 3, "bob": 3, "carol": 2}  # 8 cores, 'even', in registration order


@pytest.fixture(scope="module")
def mu_cluster():
    with started_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(mu_cluster):
    mu_cluster.reset()
    return mu_cluster


class OnceJobs(Jobs):
    """The harness's gated jobs, which also count their runs in ``ran_<ID>``."""

    def sub_proc(self, *, cores: int = 1, mem: float = 1, attr: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess:
        return self.cluster.qpy_as(self.user, "sub", "-n", str(cores), "-m", f"{mem:g}",
                                   "sh", "-c", ONCE, cwd=self.dir, check=check)


def cluster_settled(cluster: Cluster, work: dict[str, OnceJobs], released: list[tuple]):
    """Every master registered, the released jobs recorded, every user back at exactly
    their share (all have jobs waiting, and the cluster's cores are all shared out),
    allocations exactly the running jobs, nothing overcommitted."""
    names = sorted(cluster.name(u) for u in cluster.users)

    def check():
        variables = admin_variables(cluster.admin_home)
        if variables is None:
            return False, "the multiuser does not answer"
        records = {u: cluster.jobs(u) for u in cluster.users}
        info = {"connected": variables["connected"]}
        ok = variables["connected"] == names
        for user, jobs in work.items():
            status = {j["id"]: j for j in records[user]}
            ended = [(j, status[j]["status"], status[j]["exit_code"])
                     for u, j in released if u == user]
            running = running_records(records[user])
            alloc = allocations(variables, cluster.name(user))
            live = live_jobs(f"QPY_HOME={cluster.qpy_home(user)}")
            share = variables["users"].get(cluster.name(user), {})
            info[user] = {"ended": ended, "running": running, "alloc": alloc, "live": live}
            ok = ok and all(s == "done" and c == expected_exit(j) for j, s, c in ended) \
                and alloc == running and live == set(running) \
                and len(running) == share.get("minimum", 0) + share.get("extra", 0) \
                and all(jobs.started(j) for j in running)
        return ok, {**info, "variables": variables}

    info = eventually(check, "every master to register with allocations equal to the "
                             "running jobs")
    assert overcommitted(info["variables"]) == []
    return info


@pytest.mark.parametrize("victims", ["multiuser", "all"],
                         ids=["multiuser", "multiuser+masters"])
def test_cluster_daemons_sigkilled_while_jobs_run_and_wait(cluster, request, victims):
    rounds = 3
    work = {u: OnceJobs(cluster, u, cluster.workdir(u, request.node.name))
            for u in cluster.users}
    for user, jobs in work.items():  # each fills their share, in registration order
        jobs.wait_started(*jobs.subs(SHARES[user]))
    for jobs in work.values():
        jobs.subs(2 * rounds)  # these wait: the cluster is full
    info = cluster_settled(cluster, work, [])
    released: list[tuple[str, int]] = []

    for _ in range(rounds):
        during = []
        for user, jobs in work.items():
            running = sorted(info[user]["running"])
            jobs.release(running[0])  # ends around the kill
            during.append((user, running[1]))
            released += [(user, running[0]), (user, running[1])]
        pids = [cluster.multiuser_pid()]
        if victims == "all":
            pids += [cluster.master_pid(u) for u in cluster.users]
        sigkill_at_once(pids)
        for user, job in during:  # ends while the daemons are down
            work[user].release(job)
        cluster.start_multiuser()
        if victims == "all":
            for user in cluster.users:
                assert cluster.master_pid(user) is None
                cluster.qpy_as(user, "check")  # a user's next command starts their master
        info = cluster_settled(cluster, work, released)

    for jobs in work.values():
        jobs.release_all()
    for jobs in work.values():
        account_gated(jobs.wait_finished(*jobs.ids), jobs.ids, jobs.dir)
    eventually(lambda: ((v := admin_variables(cluster.admin_home)) is not None
                        and all(u["used"] == 0 and not u["jobs"]
                                for u in v["users"].values()), v),
               "every core to be released")


def test_cluster_job_in_unwritable_directory_gets_a_clear_error(cluster, request):
    alice = OnceJobs(cluster, "alice", cluster.workdir("alice", request.node.name))
    locked = alice.dir / "locked"
    locked.mkdir()
    cluster.account("alice").own(locked, 0o555)  # hers, but not writable, even by her
    master, multiuser = cluster.master_pid("alice"), cluster.multiuser_pid()
    proc = cluster.qpy_as("alice", "sub", "-m", "1", "sh", "-c", "echo ran > ran", cwd=locked)
    job = int(re.fullmatch(r"Job (\d+) received\.\n", proc.stdout).group(1))
    suite_stats.add("faults_injected")

    record = wait_for(lambda: (r := cluster.job("alice", job))["status"] in FINISHED and r,
                      WAIT, f"alice's job {job} to end")
    assert record["reason"] == \
        f"failed to start: {os.strerror(errno.EACCES)}: {locked}/job_{job}.out", record
    assert (record["exit_code"], record["signal"]) == (None, None)
    assert not (locked / "ran").exists()

    assert (cluster.master_pid("alice"), cluster.multiuser_pid()) == (master, multiuser)
    good = alice.sub()
    alice.release(good)
    account_gated(alice.wait_finished(good), [good], alice.dir)
    eventually(lambda: ((v := admin_variables(cluster.admin_home)) is not None
                        and not v["users"][cluster.name("alice")]["jobs"], v),
               "alice's cores to be released")
    assert (cluster.master_pid("alice"), cluster.multiuser_pid()) == (master, multiuser)
