"""Jobs on remote nodes over real OpenSSH: three network-namespace nodes, each with its own
sshd (tests/netns_nodes.py), a multiuser run by its admin account and masters run by real
users (tests/multiuser.py). The admin's multiuser monitors the nodes over ssh; alice's
master runs one launcher per node at the end of an ssh session. Home directories are
shared, as on the clusters qpy is made for.

Needs root; skipped otherwise, except under CI, where a missing prerequisite fails.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import pid_alive, wait_for
from multiuser import GATED, WAIT, Cluster, Jobs, expected_exit, remote_cluster

NODES = """\
# three namespace nodes; node3's cores and memory are detected by monitoring
node1 cores=2 memory=8 attributes=small check_dir=/tmp
node2 cores=4 memory=16 attributes=big
node3 attributes=small
"""
INTERVAL = "0.5"  # seconds between samples: a node that is back is seen quickly


@pytest.fixture(scope="module")
def world():
    """(qpy cluster, ssh nodes): alice and the admin can ssh to node1..3."""
    with remote_cluster(3, NODES, INTERVAL) as (qpy, nodes):
        yield qpy, nodes


@pytest.fixture
def cluster(world):
    qpy, nodes = world
    wait_for(lambda: all_up(qpy), WAIT, "every node to be up")
    qpy.qpy_as("alice", "kill", "all", check=False)
    wait_for(lambda: not [j for j in qpy.jobs("alice") if j["status"] in ("queue", "running")],
             WAIT, "alice's jobs to end")
    return qpy, nodes


@pytest.fixture
def work(world, request):
    qpy, _ = world
    return Jobs(qpy, "alice", qpy.workdir("alice", request.node.name))


def node_table(qpy: Cluster) -> dict[str, dict]:
    return {n["name"]: n for n in qpy.status_json("alice")["nodes"]}


def all_up(qpy: Cluster) -> bool:
    return all(n["state"] == "up" for n in node_table(qpy).values())


def sub(qpy: Cluster, directory: Path, *args: str) -> int:
    out = qpy.qpy_as("alice", "sub", *args, cwd=directory).stdout
    found = re.fullmatch(r"Job (\d+) received\.\n", out)
    assert found, out
    return int(found.group(1))


def finished(qpy: Cluster, job: int) -> dict:
    return wait_for(lambda: (r := qpy.job("alice", job))["status"] not in ("queue", "running")
                    and r, WAIT, f"job {job} to finish")


# -- jobs on three different nodes ------------------------------------------------------------


def test_monitoring_detects_and_reports_the_nodes(cluster):
    qpy, nodes = cluster
    table = node_table(qpy)
    assert (table["node1"]["cores"], table["node1"]["mem"]) == (2, 8)
    assert (table["node2"]["cores"], table["node2"]["mem"]) == (4, 16)
    here = len(os.sched_getaffinity(0))  # the nodes share this machine's CPUs and memory
    assert table["node3"]["cores"] == here
    assert table["node3"]["mem"] > 0
    for node in table.values():
        assert node["up"] and node["reason"] is None
        assert node["load"] is not None and node["mem_in_use"] is not None
        assert node["outsiders"] is not None
    assert table["node1"]["disk"]["path"] == "/tmp" and table["node1"]["disk"]["total"] > 0
    text = qpy.qpy_as("alice", "status").stdout
    assert f"There are 0 out of a total of {6 + here} cores being used." in text
    assert "Disk of check_dir: node1 " in text


def test_jobs_run_on_the_nodes_their_cores_and_attributes_select(cluster, work):
    qpy, _ = cluster
    record = "hostname > host_$QPY_JOB_ID; echo $QPY_N_CORES > cores_$QPY_JOB_ID; exit 7"
    big = sub(qpy, work.dir, "-n", "4", "-m", "2", "sh", "-c", record)
    one = sub(qpy, work.dir, "-a", "node1", "-m", "2", "sh", "-c", record)
    three = sub(qpy, work.dir, "-a", "node3", "-m", "2", "sh", "-c", record)
    for job, node in ((big, "node2"), (one, "node1"), (three, "node3")):
        done = finished(qpy, job)
        assert (done["status"], done["node"], done["exit_code"]) == ("done", node, 7), done
        # hostname is the node's own (its UTS namespace): the job really ran there
        assert (work.dir / f"host_{job}").read_text().strip() == node
    assert (work.dir / f"cores_{big}").read_text().strip() == "4"


def test_a_job_too_big_for_every_node_is_refused(cluster, work):
    qpy, _ = cluster
    proc = qpy.qpy_as("alice", "sub", "-n", "64", "true", cwd=work.dir, check=False)
    assert proc.returncode != 0
    assert "no node can ever run it" in proc.stderr


# -- kill -------------------------------------------------------------------------------------


def test_kill_ends_the_whole_remote_process_tree(cluster, work):
    qpy, nodes = cluster
    tree = ("sleep 300 & echo $! > child; setsid sleep 301 & echo $! > escapee; "
            "sh -c 'sleep 302 & echo $! > grandchild; wait' & echo $$ > main; wait")
    job = sub(qpy, work.dir, "-a", "node2", "-m", "1", "sh", "-c", tree)
    names = ("main", "child", "escapee", "grandchild")
    wait_for(lambda: all((work.dir / n).exists() and (work.dir / n).read_text().strip()
                         for n in names), WAIT, "the job's processes to start")
    pids = [int((work.dir / n).read_text()) for n in names]
    in_node = set(nodes.node_pids("node2"))
    assert set(pids) <= in_node, "the job's processes run inside node2's namespace"
    qpy.qpy_as("alice", "kill", str(job))
    done = finished(qpy, job)
    assert done["status"] == "killed"
    wait_for(lambda: not any(pid_alive(p) for p in pids), WAIT, "every process to end")


def test_a_time_limit_ends_a_remote_job(cluster, work):
    """The limit is kept by the job's supervisor on the node itself."""
    qpy, nodes = cluster
    job = sub(qpy, work.dir, "-a", "node2", "-m", "1", "-t", "0:1", "sh", "-c",
              "echo $$ > main; exec sleep 300")
    wait_for(lambda: (work.dir / "main").exists() and (work.dir / "main").read_text().strip(),
             WAIT, "the job to start")
    main = int((work.dir / "main").read_text())
    assert main in nodes.node_pids("node2")
    done = finished(qpy, job)
    assert (done["status"], done["node"], done["reason"]) == \
        ("killed", "node2", "time limit 00:00:01"), done
    wait_for(lambda: not pid_alive(main), WAIT, "the job's process to end")


# -- the master dies while remote jobs run ---------------------------------------------------


def test_master_sigkill_and_restart_while_remote_jobs_run(cluster, work):
    qpy, nodes = cluster
    jobs = [work.sub(attr="node1"), work.sub(attr="node2"), work.sub(attr="node3")]
    work.wait_started(*jobs)
    qpy.kill(qpy.master_pid("alice"))
    work.release(jobs[0])  # ends while the master is down
    assert [work.status(j) for j in jobs[1:]] == ["running"] * 2  # restarts the master
    work.release(*jobs[1:])
    records = work.wait_finished(*jobs)
    for record in records:
        assert (record["status"], record["exit_code"]) == ("done", expected_exit(record["id"]))
    assert [work.node(j) for j in jobs] == ["node1", "node2", "node3"]


# -- a node goes down and comes back -------------------------------------------------------


def test_node_down_marks_its_jobs_requeues_on_request_and_comes_back(cluster, work):
    qpy, nodes = cluster
    plain = work.sub(attr="node3")
    requeued = sub(qpy, work.dir, "--requeue", "-a", "node3", "-m", "1", "sh", "-c", GATED)
    work.ids.append(requeued)
    work.wait_started(plain, requeued)
    nodes.stop_sshd("node3")  # node3 goes down: its sshd and everything in it die
    try:
        lost = wait_for(lambda: (r := qpy.job("alice", plain))["status"] == "lost" and r,
                        WAIT, "the job on node3 to be marked lost")
        # its launcher may see its supervisor die before node3 is declared down
        assert "node3" in lost["reason"], lost
        assert lost["exit_code"] is None
        wait_for(lambda: qpy.job("alice", requeued)["status"] == "queue", WAIT,
                 "the --requeue job to be queued again")
        table = wait_for(lambda: (t := node_table(qpy))["node3"]["state"] == "down" and t,
                         WAIT, "node3 to be down")
        assert table["node3"]["reason"]
        assert "Down nodes: node3" in qpy.qpy_as("alice", "status").stdout
        elsewhere = work.sub(attr="small")  # node1 or node3: only node1 is up
        work.wait_started(elsewhere)
        assert work.node(elsewhere) == "node1"
        assert qpy.job("alice", requeued)["status"] == "queue"
        (work.dir / f"started_{requeued}").unlink()
    finally:
        nodes.start_sshd("node3")
    work.wait_started(requeued)  # node3 is back and runs the requeued job
    assert work.node(requeued) == "node3"
    work.release_all()
    for record in work.wait_finished(elsewhere, requeued):
        assert (record["status"], record["exit_code"]) == ("done", expected_exit(record["id"]))
    final = qpy.job("alice", plain)
    # node3, back, may tell the run's real end: its supervisor saw the job die of the
    # SIGKILL that took everything in node3 (under load it outlives the job for a moment)
    assert final["status"] == "lost" or (final["status"], final["signal"]) == ("done", 9), final


def test_a_requeued_copy_killed_while_its_node_is_down_is_killed_not_undone(cluster, work):
    """Its run given up on may have happened: ``qpy kill`` of the queued copy records
    it killed, naming the node that has not told yet (``Reconciler.remove_queued``)."""
    qpy, nodes = cluster
    job = sub(qpy, work.dir, "--requeue", "-a", "node3", "-m", "1", "sh", "-c", GATED)
    work.ids.append(job)
    work.wait_started(job)
    nodes.stop_sshd("node3")
    try:
        wait_for(lambda: qpy.job("alice", job)["status"] == "queue", WAIT,
                 "the --requeue job to be queued again")
        qpy.qpy_as("alice", "kill", str(job))
        record = qpy.job("alice", job)
        assert (record["status"], record["node"]) == ("killed", "node3"), record
        assert record["reason"] == ("killed in the queue; its run on node3 was given up on "
                                    "and its end is not known yet"), record
    finally:
        nodes.start_sshd("node3")


# -- ssh control sockets ----------------------------------------------------------------------


def test_a_long_qpy_home_reaches_the_nodes_though_bob_took_the_old_tmp_name(cluster, work):
    """alice's qpy home is too long for ssh's control sockets below it, and her ssh config
    leaves multiplexing to qpy. qpy used to put the sockets in /tmp/qpy-ssh-UID-DIGEST, a
    name bob can work out and create first, which cut alice off every node; now they go
    to a private directory of a random name, and her jobs reach the nodes."""
    qpy, nodes = cluster
    alice = qpy.account("alice")
    top = alice.home / ("a-long-project-name-" * 2)
    home = top / ".qpy"
    for path, mode in ((top, 0o755), (home, 0o700)):
        path.mkdir(mode=mode)
        alice.own(path, mode)
    for bundle in qpy.qpy_home("alice").glob("multiuser_connection_*"):
        shutil.copy(bundle, home / bundle.name)
        alice.own(home / bundle.name, 0o600)
    digest = hashlib.sha1(os.fsencode(str(home))).hexdigest()[:12]
    trap = Path(f"/tmp/qpy-ssh-{alice.uid}-{digest}")
    qpy.run_as("bob", ["mkdir", "-m", "777", str(trap)])
    config = nodes.account(qpy.name("alice")).config
    saved = config.read_text()
    config.write_text("".join(line for line in saved.splitlines(True)
                              if not line.strip().startswith("Control")))
    qpy.qpy_as("alice", "finish")  # one master of alice's at a time
    qpy_there = ["/usr/bin/env", f"QPY_HOME={home}", str(qpy.bin / "qpy")]
    used = None
    try:
        out = qpy.run_as("alice", [*qpy_there, "sub", "-a", "node1", "-m", "1", "hostname"],
                         cwd=work.dir).stdout
        job = int(out.split()[1])

        def ended():
            check = qpy.run_as("alice", [*qpy_there, "check", "--json", str(job)]).stdout
            record = json.loads(check)["jobs"][0]
            return record["status"] not in ("queue", "running") and record

        record = wait_for(ended, WAIT, f"job {job} to end")
        assert (record["status"], record["exit_code"], record["node"]) == ("done", 0, "node1")
        assert (work.dir / f"job_{job}.out").read_text() == "node1\n"
        used = Path((home / "ssh_dir").read_text().strip())
        st = used.lstat()
        assert stat.S_ISDIR(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == \
            (alice.uid, 0o700), used
        assert used.parent == Path("/tmp") and used != trap
        wait_for(lambda: any(p.is_socket() for p in used.iterdir()), WAIT,
                 "the launcher's ssh session to hold its control socket there")
        assert not list(trap.iterdir())
    finally:
        qpy.run_as("alice", [*qpy_there, "finish"], check=False)
        config.write_text(saved)
        shutil.rmtree(trap, ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)
        if used is not None:
            shutil.rmtree(used, ignore_errors=True)


# -- host keys --------------------------------------------------------------------------------


def test_a_changed_host_key_is_refused_and_the_node_kept_out(cluster, work):
    qpy, nodes = cluster
    nodes.change_host_key("node2")
    try:
        down = wait_for(lambda: (n := node_table(qpy)["node2"])["state"] == "down"
                        and "Host key" in (n["reason"] or "") and n,
                        WAIT, "node2 to be down for its host key")
        assert "Host key verification failed" in down["reason"], down
        direct = nodes.ssh("node2", "true")  # alice's own ssh refuses it as well
        assert direct.returncode != 0 and "Host key verification failed" in direct.stderr
        job = work.sub(attr="big")
        assert work.status(job) == "queue"
    finally:
        nodes.trust_host_keys()  # the admin's fix: the new key is now known
    work.wait_started(job)
    assert work.node(job) == "node2"
    work.release_all()
    record, = work.wait_finished(job)
    assert record["exit_code"] == expected_exit(job)


# -- the submission directory ---------------------------------------------------------------


def test_a_directory_the_node_cannot_see_fails_the_job_clearly(cluster, tmp_path_factory):
    qpy, _ = cluster
    mount = Path(tmp_path_factory.mktemp("hostonly"))
    os.chmod(mount, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "qpytest", str(mount)], check=True)
    try:
        here = mount / "only-here"
        here.mkdir()
        os.chown(here, qpy.account("alice").uid, qpy.account("alice").gid)
        job = sub(qpy, here, "-a", "node1", "-m", "1", "true")
        record = finished(qpy, job)
        assert record["exit_code"] is None
        assert str(here) in record["reason"] and "node1" in record["reason"], record
        assert "submission directory" in record["reason"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- a node's link is cut while jobs run ------------------------------------------------------

# A gated job that counts its runs: a second run shows as a second line.
ONCE = "echo $QPY_JOB_ID >> ran_$QPY_JOB_ID; " + GATED


def in_node_with(nodes, node: str, *words: str) -> set[int]:
    """PIDs in ``node`` whose command line holds every one of ``words``."""
    found = set()
    for pid in nodes.node_pids(node):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(w in argv for w in words):
            found.add(pid)
    return found


def slot_ends(qpy: Cluster, node: str) -> dict[int, dict]:
    """The ends recorded in alice's slot file for ``node``."""
    from qpy_master import launcher
    data = (qpy.qpy_home("alice") / "run" / node / "slots").read_bytes()
    ends = {}
    for i in range(0, len(data), launcher.SLOT):
        head, result = launcher.parse_slot(data[i:i + launcher.SLOT])
        if head is not None and result is not None:
            ends[head[0]] = result
    return ends


def ran_once(directory: Path, job: int) -> bool:
    return (directory / f"ran_{job}").read_text().split() == [str(job)]


def runs_of(qpy: Cluster, job: int) -> list[tuple]:
    """(status, node, exit code) of each run ``qpy history`` keeps of ``job``."""
    doc = json.loads(qpy.qpy_as("alice", "history", "--json", str(job)).stdout)
    return [(r["status"], r["node"], r["exit_code"]) for r in doc["runs"]]


def test_a_cut_link_loses_no_end_and_runs_no_job_twice(cluster, work):
    """node3's cable is pulled while two jobs run there (one with --requeue); both finish
    during the cut. When the link is back, the lost job gets its real end and the requeued
    copy, which could not start anywhere else, is withdrawn with its first run's end: each
    ran once. Meanwhile the launcher, its supervisors and its ssh session on node3 ended
    by themselves although nobody closed their session."""
    qpy, nodes = cluster
    plain = sub(qpy, work.dir, "-a", "node3", "-m", "1", "sh", "-c", ONCE)
    requeued = sub(qpy, work.dir, "--requeue", "-a", "node3", "-m", "1", "sh", "-c", ONCE)
    work.ids += [plain, requeued]
    work.wait_started(plain, requeued)
    alice = qpy.name("alice")
    launchers = in_node_with(nodes, "node3", "qpy-launcher")
    sessions = in_node_with(nodes, "node3", "sshd", alice)
    assert launchers and sessions
    nodes.cut_link("node3")
    try:
        wait_for(lambda: qpy.job("alice", plain)["status"] == "lost"
                 and qpy.job("alice", requeued)["status"] == "queue", WAIT,
                 "node3's jobs to be recorded lost and queued again")
        work.release(plain, requeued)
        wait_for(lambda: {plain, requeued} <= set(slot_ends(qpy, "node3")), WAIT,
                 "both jobs to end on node3")
        wait_for(lambda: not any(pid_alive(p) for p in launchers), WAIT,
                 "the cut session's launcher and supervisors to exit")
    finally:
        nodes.restore_link("node3")
    for job in (plain, requeued):
        record = wait_for(lambda j=job: (r := qpy.job("alice", j))["status"] == "done" and r,
                          WAIT, f"job {job} to get the end it had on node3")
        assert (record["status"], record["node"], record["exit_code"]) == \
            ("done", "node3", expected_exit(job)), record
        assert ran_once(work.dir, job)
        assert runs_of(qpy, job) == [("done", "node3", expected_exit(job))]  # not lost
    notes = qpy.qpy_as("alice", "notes", str(plain)).stdout
    assert "node3 was reached again" in notes, notes
    wait_for(lambda: not any(pid_alive(p) for p in sessions), WAIT,
             "the cut ssh session to end on node3")
    wait_for(lambda: not ({plain, requeued} & set(slot_ends(qpy, "node3"))), WAIT,
             "the slots of the two runs to be freed")


def test_a_copy_started_before_its_node_told_gets_its_first_runs_end(cluster, work):
    """A --requeue job ends on node3 during a cut; when node3 is back, its queued copy
    is started there before node3's new launcher has told what became of the first run
    (alice's ssh sessions are held at login until the copy is recorded running). The
    start is answered with the first run's end: the job ran once, and its history and
    record hold that one run, with its own start, not a lost run beside it."""
    qpy, nodes = cluster
    job = sub(qpy, work.dir, "--requeue", "-a", "node3", "-m", "1", "sh", "-c", ONCE)
    work.ids.append(job)
    work.wait_started(job)
    launchers = in_node_with(nodes, "node3", "qpy-launcher")
    gate = work.dir / "hold_logins"
    rc = qpy.account("alice").home / ".ssh" / "rc"  # run by sshd at each login of alice
    nodes.cut_link("node3")
    try:
        wait_for(lambda: qpy.job("alice", job)["status"] == "queue", WAIT,
                 "the job to be queued again")
        work.release(job)
        wait_for(lambda: job in slot_ends(qpy, "node3"), WAIT, "the first run to end")
        wait_for(lambda: not any(pid_alive(p) for p in launchers), WAIT,
                 "the cut session's launcher to exit")
        gate.touch()
        rc.write_text(f"i=0; while [ -e {gate} ] && [ $i -lt 900 ]; do sleep 0.1; "
                      "i=$((i+1)); done\n")
        rc.chmod(0o644)
        back = time.time()
    finally:
        nodes.restore_link("node3")
    try:
        wait_for(lambda: qpy.job("alice", job)["status"] == "running", WAIT,
                 "the copy to be started on node3")
    finally:
        gate.unlink()
        rc.unlink()
    record = wait_for(lambda: (r := qpy.job("alice", job))["status"] == "done" and r, WAIT,
                      "the job to get its first run's end")
    assert (record["node"], record["exit_code"]) == ("node3", expected_exit(job)), record
    started = datetime.datetime.fromisoformat(record["t_start"].replace("Z", "+00:00"))
    assert started.timestamp() < back, record  # the first run's start, not the copy's
    assert ran_once(work.dir, job)
    assert runs_of(qpy, job) == [("done", "node3", expected_exit(job))]  # no lost run


def test_a_start_sent_into_a_session_whose_link_just_dropped_runs_later_once(cluster, work):
    """The start op of a job goes into node3's ssh session just after its cable was
    pulled: the job is lost while nobody knows, and goes back to the queue (and runs, once)
    as soon as node3 shows that the start never reached it."""
    qpy, nodes = cluster
    warm = work.sub(attr="node3")  # the session to node3 is up and idle
    work.wait_started(warm)
    work.release(warm)
    work.wait_finished(warm)
    nodes.cut_link("node3")
    try:
        job = sub(qpy, work.dir, "-a", "node3", "-m", "1", "sh", "-c", ONCE)
        work.ids.append(job)
        lost = wait_for(lambda: (r := qpy.job("alice", job))["status"] == "lost" and r, WAIT,
                        "the job to be recorded lost")
        assert "not been acknowledged" in lost["reason"], lost
        assert not work.started(job)
    finally:
        nodes.restore_link("node3")
    work.wait_started(job)
    assert work.node(job) == "node3"
    work.release(job)
    record = wait_for(lambda: (r := qpy.job("alice", job))["status"] == "done" and r, WAIT,
                      "the job to end")
    assert record["exit_code"] == expected_exit(job), record
    assert ran_once(work.dir, job)
    assert runs_of(qpy, job) == [("done", "node3", expected_exit(job))]  # one run, not two


# -- removing a node, restarting the multiuser: what status says ------------------------------


def summary_used(text: str) -> int:
    found = re.search(r"There are (\d+) out of a total of (\d+) cores being used\.", text)
    assert found, text
    return int(found.group(1))


def test_a_removed_node_is_watched_while_it_drains_and_its_jobs_end_if_it_dies(cluster, work):
    """node3 is taken out of ``nodes`` while a job runs there: status shows it draining
    and counts it (not as down); when it then crashes, the job is recorded lost and its
    core freed, instead of staying running until the node is added back."""
    qpy, nodes = cluster
    job = work.sub(attr="node3")
    work.wait_started(job)
    qpy.write_admin_file("nodes", NODES.replace("node3 attributes=small\n", ""))
    qpy.admin("nodes")
    try:
        table = node_table(qpy)
        assert (table["node3"]["state"], table["node3"]["used_cores"]) == ("draining", 1)
        text = qpy.qpy_as("alice", "status").stdout
        assert "Draining (removed from nodes, jobs still running): node3" in text, text
        assert "Down nodes" not in text and "node3 (draining)" in text, text
        total = 6 + table["node3"]["cores"]  # node1 + node2 + the draining node3
        assert f"There are 1 out of a total of {total} cores being used." in text, text
        assert work.status(job) == "running"
        nodes.stop_sshd("node3")
        lost = wait_for(lambda: (r := qpy.job("alice", job))["status"] == "lost" and r, WAIT,
                        "the job on the crashed, removed node to be recorded lost")
        assert "node3" in lost["reason"], lost
        wait_for(lambda: "node3" not in node_table(qpy), WAIT, "node3 to drain and go")
    finally:
        qpy.write_admin_file("nodes", NODES)
        qpy.admin("nodes")
        nodes.start_sshd("node3")


def test_status_right_after_a_multiuser_restart_says_what_it_does_not_know(cluster, work):
    """The multiuser is SIGKILLed and restarted while node3, running a job, cannot be
    reached yet (its link is cut): node3's detected size is unknown, so status says it is
    not measured yet instead of showing 0/0, and the summary counts the job's core as the
    users table does."""
    qpy, nodes = cluster
    job = work.sub(attr="node3")
    work.wait_started(job)
    nodes.cut_link("node3")
    try:
        qpy.kill(qpy.multiuser_pid())
        qpy.start_multiuser()
        reply = qpy.status_json("alice")
        text = qpy.qpy_as("alice", "status").stdout
        node3 = {n["name"]: n for n in reply["nodes"]}["node3"]
        assert node3["state"] == "unknown", node3
        in_use = sum(u["used"] for u in reply["users"])
        assert in_use == sum(n["used_cores"] for n in reply["nodes"]) == 1, reply
        assert summary_used(text) == in_use, text
        assert "node3 (unknown)" in text and "/?" in text, text
        unknown = re.search(r"^Not measured yet: ([\w, ]+) \(", text, re.MULTILINE)
        assert unknown and "node3" in unknown.group(1).split(", "), text  # (node1, 2 too,
        # until their first sample after the restart)
    finally:
        nodes.restore_link("node3")
    work.release(job)
    record, = work.wait_finished(job)
    assert (record["status"], record["exit_code"]) == ("done", expected_exit(job)), record
