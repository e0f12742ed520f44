"""A hostile user on a shared cluster, with only her own valid key (issue 11).

Real Unix accounts (see ``multiuser.py``): alice and bob use qpy as meant; mallory is
admitted like them and attacks from her own account's processes. Each test makes one
attack and checks that the others are not harmed by it: their jobs start, their masters
register, the admin's commands work, and what the multiuser shows is true.

The nodes (``multiuser.NODES``): n1 2 cores 8 GB, n2 4 cores 16 GB, n3 2 cores 4 GB.
Needs root, like test_multiuser.py.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import wait_for
from multiuser import (
    HOLD_PROBE,
    WAIT,
    Cluster,
    LogTail,
    jobs_of,
    skip_module_unless_available,
    started_cluster,
)

skip_module_unless_available()

USERS = ("alice", "bob", "mallory")
NODES = {"n1": (2, 8.0), "n2": (4, 16.0), "n3": (2, 4.0)}


@pytest.fixture(scope="module")
def hostile_cluster():
    with started_cluster(users=USERS) as cluster:
        yield cluster


@pytest.fixture
def cluster(hostile_cluster):
    hostile_cluster.reset()
    return hostile_cluster


@pytest.fixture
def work(cluster, request):
    return jobs_of(cluster, request)


# -- helpers -----------------------------------------------------------------------------------


def forge_hello(cluster: Cluster, running: list[dict], queue_size: int = 0) -> dict:
    """Mallory stops her master (so it does not register again over her forgery) and
    registers herself, from her own account with her own key, claiming ``running``."""
    cluster.qpy_as("mallory", "finish")
    mallory = cluster.name("mallory")
    wait_for(lambda: mallory not in cluster.variables()["connected"], WAIT,
             "mallory's master to disconnect")
    results = cluster.wire_as("mallory", [
        {"connect": None},
        {"send": {"type": "hello", "running": running, "queue_size": queue_size, "id": 1}},
        {"close": True}])
    assert results[0] == {"connected": True}, results
    return results[1]["reply"]


def nodes_view(cluster: Cluster, user: str = "bob") -> dict[str, dict]:
    return {n["name"]: n for n in cluster.status_json(user)["nodes"]}


def assert_sane_accounting(cluster: Cluster) -> None:
    """Every node's accounting fits it and is finite; mallory holds nothing."""
    data = cluster.variables()
    assert set(data["nodes"]) == set(NODES), sorted(data["nodes"])[:10]
    for name, node in data["nodes"].items():
        assert 0 <= node["used_cores"] <= node["cores"], (name, node)
        assert math.isfinite(node["used_mem"]) and 0 <= node["used_mem"] <= node["mem"], \
            (name, node)
    mallory = data["users"].get(cluster.name("mallory"))
    assert mallory is None or (mallory["used"] == 0 and not mallory["jobs"]), mallory


def others_get_every_core(work) -> None:
    """Alice and bob together get all 8 cores: one job per core, on every node."""
    alice, bob = work("alice"), work("bob")
    jobs = {"alice": [alice.sub(attr="n1"), alice.sub(attr="n1"), alice.sub(attr="n3"),
                      alice.sub(attr="n3")],
            "bob": [bob.sub(attr="n2") for _ in range(4)]}
    alice.wait_started(*jobs["alice"])
    bob.wait_started(*jobs["bob"])
    alice.release_all()
    bob.release_all()
    alice.wait_finished(*jobs["alice"])
    bob.wait_finished(*jobs["bob"])


# -- 4. a forged hello ---------------------------------------------------------------------------


def test_forged_running_jobs_claim_no_cores(cluster, work):
    """A million cores on every node, claimed in a hello: not accounted, so alice and
    bob still get every core; the claim is not shown anywhere."""
    claims = [{"job": i + 1, "node": name, "cores": 1_000_000, "mem": 1}
              for i, name in enumerate(NODES)]
    claims.append({"job": 4, "node": "n2", "cores": 1, "mem": 1e308})
    reply = forge_hello(cluster, claims, queue_size=10**6)
    assert reply["ok"] is True, reply
    assert_sane_accounting(cluster)
    others_get_every_core(work)
    assert sorted(reply["unaccounted"]) == [1, 2, 3, 4]


def test_forged_jobs_that_fit_are_not_accounted_either(cluster, work):
    """Jobs the multiuser never granted, each small enough for its node: a multiuser
    that has its ledger knows they were never granted."""
    reply = forge_hello(cluster, [{"job": 10 + i, "node": name, "cores": cores, "mem": 1}
                                  for i, (name, (cores, _)) in enumerate(NODES.items())])
    assert reply["ok"] is True, reply
    assert_sane_accounting(cluster)
    others_get_every_core(work)
    assert sorted(reply["unaccounted"]) == [10, 11, 12], reply


@pytest.mark.parametrize("mem", [float("inf"), float("-inf"), float("nan")])
def test_memory_that_is_not_finite_is_refused(cluster, work, mem):
    """``mem: Infinity`` made a node's used memory NaN once released, and nothing was
    placed there again."""
    reply = forge_hello(cluster, [{"job": 1, "node": "n1", "cores": 1, "mem": mem}])
    assert reply["ok"] is False and reply["code"] == "bad_request", reply
    # and once more with nothing running, as a master that lets the job end would
    results = cluster.wire_as("mallory", [
        {"connect": None}, {"send": {"type": "hello", "running": [], "queue_size": 0}}])
    assert results[1]["reply"]["ok"] is True, results
    assert_sane_accounting(cluster)
    others_get_every_core(work)


def test_made_up_nodes_are_not_shown_to_anyone(cluster, work):
    reply = forge_hello(cluster, [{"job": i, "node": f"fake{i}", "cores": 1, "mem": 1}
                                  for i in range(1, 3001)])
    assert reply["ok"] is True, str(reply)[:300]
    assert set(nodes_view(cluster)) == set(NODES)
    assert "fake" not in cluster.qpy_as("alice", "status").stdout
    assert_sane_accounting(cluster)
    assert len(reply["unaccounted"]) == 3000


def test_a_job_reported_twice_counts_once(cluster, work):
    mallory = work("mallory")
    job = mallory.sub(attr="n1")
    mallory.wait_started(job)
    node = mallory.node(job)
    reply = forge_hello(cluster, [{"job": job, "node": node, "cores": 1, "mem": 1}] * 50)
    assert reply["ok"] is True, reply
    data = cluster.variables()
    assert data["users"][cluster.name("mallory")]["used"] == 1
    assert data["nodes"][node]["used_cores"] == 1
    mallory.release_all()


def test_a_granted_job_counts_with_the_size_it_was_granted(cluster, work):
    """Mallory's real job holds 1 core; her hello claims it holds 2 cores and 8 GB: the
    multiuser keeps what it granted."""
    mallory = work("mallory")
    job = mallory.sub(attr="n1")
    mallory.wait_started(job)
    reply = forge_hello(cluster, [{"job": job, "node": "n1", "cores": 2, "mem": 8}])
    assert reply["ok"] is True, reply
    data = cluster.variables()
    assert data["users"][cluster.name("mallory")]["jobs"] == {str(job): ["n1", 1, 1.0]}
    assert data["nodes"]["n1"]["used_cores"] == 1
    mallory.release_all()


def test_forged_claims_do_not_survive_a_multiuser_restart(cluster, work):
    forge_hello(cluster, [{"job": i + 1, "node": name, "cores": cores, "mem": 1}
                          for i, (name, (cores, _)) in enumerate(NODES.items())])
    cluster.kill(cluster.multiuser_pid())
    cluster.start_multiuser()
    assert_sane_accounting(cluster)
    others_get_every_core(work)


def test_running_jobs_are_accounted_after_a_restart_without_the_ledger(cluster, work):
    """The honest side of the rule: a multiuser that lost its ledger accounts what the
    masters report, as far as it fits on real nodes."""
    alice = work("alice")
    jobs = [alice.sub(attr="n2", cores=2), alice.sub(attr="n1")]
    alice.wait_started(*jobs)
    cluster.admin("finish")
    wait_for(lambda: cluster.multiuser_pid() is None, WAIT, "the multiuser to stop")
    for path in cluster.admin_home.glob("ledger.db*"):
        path.unlink()
    cluster.start_multiuser()
    alice_name = cluster.name("alice")
    wait_for(lambda: cluster.variables()["users"].get(alice_name, {}).get("used") == 3, WAIT,
             "alice's running jobs to be accounted again")
    assert cluster.variables()["users"][alice_name]["jobs"] == {
        str(jobs[0]): ["n2", 2, 1.0], str(jobs[1]): ["n1", 1, 1.0]}
    alice.release_all()
    alice.wait_finished(*jobs)


# -- 5. connection slots -------------------------------------------------------------------------


def hold(cluster: Cluster, user: str, mode: str, count: int, interval: float = 3.0):
    """``count`` connections of ``mode`` (HOLD_PROBE) from the user's own process, left
    open; returns the process and its first report."""
    proc = cluster.probe_process(user, HOLD_PROBE, {"mode": mode, "count": count,
                                                     "interval": interval})
    first = json.loads(proc.stdout.readline())
    return proc, first


def end(proc) -> None:
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
    except OSError:
        pass
    proc.wait(WAIT)


def others_are_served(cluster: Cluster, work) -> None:
    """While the attack holds: the admin's commands work, bob's master restarts and
    registers, and alice's job runs."""
    assert cluster.admin("status").returncode == 0
    assert cluster.admin("distribute").returncode == 0
    bob = cluster.name("bob")
    cluster.qpy_as("bob", "restart")
    wait_for(lambda: bob in cluster.variables()["connected"], WAIT,
             "bob's restarted master to register")
    alice = work("alice")
    job = alice.sub()
    alice.wait_started(job)
    alice.release_all()
    alice.wait_finished(job)


def multiuser_log(cluster: Cluster) -> LogTail:
    return LogTail(cluster.admin_home / "multiuser.log")


def test_idle_connections_with_a_users_own_key_lock_nobody_out(cluster, work):
    log = multiuser_log(cluster)
    proc, first = hold(cluster, "mallory", "auth", 520)
    try:
        others_are_served(cluster, work)
        assert first["opened"] <= 16, first  # her own share of connections
    finally:
        end(proc)
    assert len(log.lines()) < 300, len(log.lines())


def test_connections_without_a_key_lock_nobody_out(cluster, work):
    log = multiuser_log(cluster)
    proc, first = hold(cluster, "mallory", "silent", 520)
    try:
        others_are_served(cluster, work)
        assert first["opened"] <= 8, first  # handshakes at once from one account
    finally:
        end(proc)
    assert len(log.lines()) < 300, len(log.lines())


def test_a_trickled_handshake_ends_within_the_handshake_limit(cluster, work):
    """One byte every three seconds satisfies every read timeout, so the handshake as
    a whole has a deadline."""
    proc, first = hold(cluster, "mallory", "trickle", 8, interval=3.0)
    try:
        assert first["opened"] == 8, first
        wait_for(lambda: json.loads(proc.stdout.readline())["alive"] == 0, WAIT,
                 "the multiuser to end the trickled handshakes")
    finally:
        end(proc)


def test_an_idle_session_that_is_not_a_masters_link_is_ended(cluster):
    proc = cluster.wire_process("mallory", [{"connect": None}, {"read": WAIT}])
    try:
        assert json.loads(proc.stdout.readline()) == {"connected": True}
        result = json.loads(proc.stdout.readline())
        assert "closed" in result, result  # not a frame, and not our own time-out
    finally:
        proc.kill()
        proc.wait(WAIT)


def test_a_flood_of_refused_hellos_does_not_flood_the_log(cluster):
    """Thousands of hellos for made-up users, each refused: the log keeps a few lines
    and says how many more there were."""
    log = multiuser_log(cluster)
    steps = [{"connect": {"claim": f"nobody{i}", "key": "00" * 32}} for i in range(2000)]
    results = cluster.wire_as("mallory", steps, timeout=600)
    assert all("refused" in r for r in results), results[:3]
    lines = log.lines()
    assert len(lines) < 300, len(lines)
    assert any("held back" in line for line in lines) or len(lines) < 200

    def says_how_many() -> bool:  # the next refusal let through counts those held back
        cluster.wire_as("mallory", steps[:1])
        return any("more like this held back" in line for line in log.lines())

    wait_for(says_how_many, WAIT, "a refusal line that says how many were held back")


# -- 6 and 8. removing a user --------------------------------------------------------------------


def readmit(cluster: Cluster, user: str = "mallory") -> None:
    """Give the user access back (and, if their key changed, the new bundle)."""
    name = cluster.name(user)
    out = cluster.admin_account.home / "bundles" / f"{user}-again"
    cluster.admin("adduser", name, "--out", str(out))
    cluster.install_bundle(user, out)
    cluster.admin("distribute")
    cluster.qpy_as(user, "status", check=False)  # starts the master if it was stopped
    wait_for(lambda: name in cluster.variables()["connected"], WAIT,
             f"{user}'s master to register again")


def remove_from_file(cluster: Cluster, user: str) -> None:
    name = cluster.name(user)
    allowed = (cluster.admin_home / "allowed_users").read_text().split()
    cluster.write_admin_file("allowed_users", "".join(f"{u}\n" for u in allowed if u != name))
    cluster.admin("distribute")


def test_removeuser_ends_a_session_opened_before(cluster):
    """Mallory opens a connection, then the admin removes her: the connection is ended
    at once, and nothing she sends on it is served."""
    cluster.qpy_as("mallory", "finish")
    proc = cluster.wire_process("mallory", [
        {"connect": None}, {"wait": "removed"}, {"read": WAIT},
        {"send": {"type": "hello", "running": [], "queue_size": 2}},
        {"send": {"type": "slots", "release": [], "queue_size": 2,
                  "want": [{"cores": 1, "mem": 1, "attr": None, "jobs": [1, 2]}]}}])
    try:
        assert json.loads(proc.stdout.readline()) == {"connected": True}
        assert json.loads(proc.stdout.readline()) == {"waiting": "removed"}
        cluster.admin("removeuser", cluster.name("mallory"))
        proc.stdin.write("\n")
        proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.kill()
        proc.wait(WAIT)
    try:
        assert "closed" in results[0], results  # ended by the multiuser, not timed out
        for result in results[1:]:
            assert "closed" in result or result["reply"]["ok"] is False, results
        data = cluster.variables()
        assert cluster.name("mallory") not in data["connected"]
        assert not data["users"].get(cluster.name("mallory"), {}).get("jobs")
    finally:
        readmit(cluster)


def assert_refused_with_cause(proc) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.startswith("qpy: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "not allowed" in proc.stderr, proc.stderr


def removal_is_felt(cluster: Cluster, work, remove) -> None:
    """Mallory has a running job and a queued one when ``remove`` takes her access
    away: her master is told, ``qpy sub`` is refused with the cause, her share goes to
    the others while her running job's cores stay counted until it ends, and her queued
    job waits. When access returns, the queued job runs."""
    alice, mallory = work("alice"), work("mallory")
    running = mallory.sub(attr="n3")
    mallory.wait_started(running)
    holders = [alice.sub(attr="n1"), alice.sub(attr="n1")]
    alice.wait_started(*holders)
    queued = mallory.sub(attr="n1")
    name = cluster.name("mallory")
    master_log = cluster.qpy_home("mallory") / "master.log"
    log_start = master_log.stat().st_size
    remove(cluster, "mallory")
    try:
        wait_for(lambda: b"not allowed" in master_log.read_bytes()[log_start:], WAIT,
                 "mallory's master to be told")
        assert_refused_with_cause(mallory.sub_proc(check=False))
        assert_refused_with_cause(cluster.qpy_as("mallory", "status", check=False))
        assert mallory.status(queued) == "queue"
        users = {u["user"]: u for u in cluster.status_json("alice")["users"]}
        assert sum(u["minimum"] + u["extra"] for u in users.values()) == 8
        assert users[name]["minimum"] + users[name]["extra"] == 0, users[name]
        assert users[name]["used"] == 1  # her running job's core, until it ends
        mallory.release(running)
        mallory.wait_finished(running)
        wait_for(lambda: not cluster.variables()["users"].get(name, {}).get("jobs"), WAIT,
                 "the ended job's core to be released")
    finally:
        readmit(cluster)
    alice.release_all()
    mallory.wait_started(queued)
    mallory.release_all()
    mallory.wait_finished(queued)


def test_removeuser_tells_the_master_and_frees_the_share(cluster, work):
    removal_is_felt(cluster, work, lambda c, user: c.admin("removeuser", c.name(user)))


def test_allowed_users_file_controls_access(cluster, work):
    removal_is_felt(cluster, work, remove_from_file)
