"""The launcher's protocol as written in ``qpy_master/launcher.py`` (OPS, EVENTS): a real
launcher process refuses ops that lack a field or are unknown, with an ``error`` event,
and goes on serving; every event it sends fits EVENTS."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

from conftest import pid_alive, wait_for

from qpy import ssh
from qpy_master import launcher, launcher_pool
from qpy_master.launcher_pool import launcher_command


def _events(proc: subprocess.Popen, count: int) -> list[dict]:
    """The next ``count`` events (a launcher that stays silent fails the test, after a
    limit that only guards against a hang)."""
    events = []
    for _ in range(count):
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, f"no event from the launcher; so far {events}"
        events.append(json.loads(proc.stdout.readline()))
    return events


def test_bad_ops_get_an_error_event_and_the_launcher_goes_on(tmp_path):
    argv, preamble = launcher_command(str(tmp_path), python=sys.executable)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdin.write(preamble)
        ready, = _events(proc, 1)
        assert ready["ev"] == "ready"
        proc.stdin.write(b'{"op":"start","job":1}\n{"op":"explode"}\nnot json\n'
                         b'{"op":"adopt","job":5}\n')
        proc.stdin.flush()
        short, unknown, garbage, lost = _events(proc, 4)
        assert short["ev"] == "error" and "'cmd'" in short["text"], short
        assert unknown["ev"] == "error" and "'explode'" in unknown["text"], unknown
        assert garbage["ev"] == "error", garbage
        assert lost == {"ev": "lost", "job": 5, "ran": False,
                        "reason": "the job was never started"}
        for event in (ready, short, unknown, garbage, lost):
            assert all(field in event for field in launcher.EVENTS[event["ev"]]), event
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def _launcher(run_dir, source=None):
    """A launcher started as the master starts it (its source from ``source`` if given)."""
    argv, preamble = launcher_command(str(run_dir), python=sys.executable)
    if source is not None:
        preamble = ssh.source_preamble(str(source), str(launcher_pool.CGROUPS),
                                       str(launcher_pool.LIMITS))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    proc.stdin.write(preamble)
    ready, = _events(proc, 1)
    assert ready["ev"] == "ready"
    return proc


def _send(proc: subprocess.Popen, *ops: dict) -> None:
    proc.stdin.write(b"".join(json.dumps(op).encode() + b"\n" for op in ops))
    proc.stdin.flush()


def _start(job: int, cmd: str, where) -> dict:
    return {"op": "start", "job": job, "cmd": cmd, "cwd": str(where), "env_id": None,
            "grace": 1, "vars": {}, "out": str(where / f"{job}.out"),
            "err": str(where / f"{job}.err"), "umask": 0o022, "limit": None,
            "limits": {"cores": 1, "mem": 1.0}}


def test_a_new_launcher_tells_the_fate_of_runs_the_master_gave_up_on(tmp_path):
    """Runs a master gave up on (their node was out of reach) are asked about in the next
    launcher's sweep: an ended run is reported with its end and keeps its slot until
    ``forget``, a job never started there says so, and a start op for a job whose slot
    holds an end is answered with that end instead of running the job again."""
    run = tmp_path / "run"
    first = _launcher(run)
    try:
        _send(first, _start(7, "echo ran >> ran_7; exit 3", tmp_path))
        started, ended = _events(first, 2)
        assert (started["ev"], ended["ev"], ended["exit"]) == ("started", "ended", 3)
    finally:
        first.stdin.close()  # the master link is gone before anybody recorded the end
        first.wait(timeout=30)
    second = _launcher(run)
    try:
        _send(second, {"op": "sweep", "keep": [], "ask": [7, 8]})
        never, fate = _events(second, 2)
        assert never == {"ev": "fate", "job": 8, "ran": False}
        assert (fate["ev"], fate["job"], fate["ran"], fate["exit"]) == ("fate", 7, True, 3)
        assert fate["t"] == started["t"] and "t_end" in fate
        for event in (never, fate):
            assert all(field in event for field in launcher.EVENTS[event["ev"]]), event
        _send(second, _start(7, "echo ran >> ran_7; exit 3", tmp_path))
        again, = _events(second, 1)
        assert (again["ev"], again["job"], again["exit"]) == ("ended", 7, 3)
        assert again["t"] == started["t"]  # the start the master did not hear of
        _send(second, {"op": "forget", "job": 7}, {"op": "adopt", "job": 7})
        gone, = _events(second, 1)
        assert (gone["ev"], gone["ran"]) == ("lost", False)  # the slot is free now
    finally:
        second.stdin.close()
        second.wait(timeout=30)
    assert (tmp_path / "ran_7").read_text() == "ran\n"  # it ran once


def test_a_launcher_that_hears_nothing_from_its_master_exits(tmp_path):
    """A launcher whose master link went silent (a cut network keeps the session open)
    exits after LINK_TIMEOUT even though its stdin stays open; pings keep it alive."""
    source = Path(launcher.__file__).read_text().replace(
        "LINK_TIMEOUT = 30.0", "LINK_TIMEOUT = 1.5", 1)
    assert "LINK_TIMEOUT = 1.5" in source
    quick = tmp_path / "launcher.py"
    quick.write_text(source)
    proc = _launcher(tmp_path / "run", quick)
    try:
        spare = wait_for(lambda: launcher.children(proc.pid), 60, "the spare supervisor")
        for _ in range(4):  # pings: it stays, longer than the timeout
            _send(proc, {"op": "ping"})
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            assert proc.poll() is None
        assert proc.wait(timeout=60) == 0  # silence: it goes, stdin still open
        wait_for(lambda: not any(pid_alive(p) for p in spare), 60, "the spare to end")
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()


def test_a_start_behind_a_still_running_old_run_reruns_only_a_killed_one(tmp_path):
    """A job given up on still runs when its start comes again (a requeued copy): the old
    run is killed first, even one this launcher had not adopted. If the old run then ends
    by itself (here: it exits with its own code when asked to stop), its end answers the
    start and nothing runs again; if it was killed by the signal, the job runs again."""
    run = tmp_path / "run"
    first = _launcher(run)
    script = ("echo ran >> ran_{job}; {trap} echo $$ > up_{job}; "
              "while true; do sleep 0.05; done")
    trapping = script.format(job=1, trap="trap 'exit 4' TERM;")
    plain = script.format(job=2, trap="")
    try:
        _send(first, _start(1, trapping, tmp_path), _start(2, plain, tmp_path))
        first_runs = _events(first, 2)
        wait_for(lambda: (tmp_path / "up_1").exists() and (tmp_path / "up_2").exists(), 60,
                 "both runs to be up")
    finally:
        first.stdin.close()
        first.wait(timeout=30)
    second = _launcher(run)
    try:
        _send(second, {"op": "sweep", "keep": [1, 2], "ask": []}, {"op": "adopt", "job": 1})
        _events(second, 1)  # started (adopted); job 2's run is not even adopted
        _send(second, _start(1, trapping, tmp_path))
        answer, = _events(second, 1)
        assert (answer["ev"], answer["job"], answer["exit"]) == ("ended", 1, 4), answer
        old_start = next(e["t"] for e in first_runs if e["job"] == 1)
        assert answer["t"] == old_start, answer  # the start it answers is the old run's
        _send(second, _start(2, "echo ran >> ran_2", tmp_path))
        again = _events(second, 2)
        assert [e["ev"] for e in again] == ["started", "ended"], again
        assert again[1].get("exit") == 0 and not again[1].get("killed"), again
        assert not pid_alive(int((tmp_path / "up_2").read_text()))  # the old run is gone
    finally:
        second.stdin.close()
        second.wait(timeout=30)
    assert (tmp_path / "ran_1").read_text() == "ran\n"  # ran once
    assert (tmp_path / "ran_2").read_text() == "ran\nran\n"  # killed, then run again


def test_two_launchers_of_one_node_never_share_a_slot(tmp_path):
    """Two launchers of one user on one node at once (one still ending, one new): the new
    one's picture of the slots file is older than the first one's latest start, yet it
    never hands out a slot that holds a job, so no job's end overwrites another's."""
    run = tmp_path / "run"
    earlier = _launcher(run)
    _send(earlier, _start(9, "exit 9", tmp_path))
    _events(earlier, 2)
    _send(earlier, {"op": "forget", "job": 9})  # slot 0 is free again once its
    wait_for(lambda: 9 not in _slot_jobs(run), 30, "job 9's slot to be freed")  # supervisor exits
    earlier.stdin.close()
    earlier.wait(timeout=30)
    first, second = _launcher(run), _launcher(run)  # both see slot 0 free
    try:
        _send(first, _start(1, "exit 1", tmp_path))
        _events(first, 2)  # started, ended: job 1 holds slot 0 until forgotten
        _send(second, _start(2, "exit 2", tmp_path))
        started, ended = _events(second, 2)
        assert (ended["ev"], ended["exit"]) == ("ended", 2)
        assert _slot_jobs(run) == {1: 1, 2: 2}  # each job's end in a slot of its own
    finally:
        for proc in (first, second):
            proc.stdin.close()
            proc.wait(timeout=30)


def _slot_jobs(run) -> dict[int, int | None]:
    """Job -> exit code of what the run directory's slots file holds."""
    data = (run / "slots").read_bytes()
    jobs = {}
    for i in range(0, len(data), launcher.SLOT):
        head, result = launcher.parse_slot(data[i:i + launcher.SLOT])
        if head is not None:
            jobs[head[0]] = (result or {}).get("exit")
    return jobs


PLANTED = "import pathlib; pathlib.Path({marker!r}).touch()\n"


def _started_clean(argv: list[str], cwd, preamble: bytes | None, env: dict) -> None:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        if preamble:
            proc.stdin.write(preamble)
            proc.stdin.flush()
        ready, = _events(proc, 1)
        assert ready["ev"] == "ready"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_launchers_import_nothing_from_their_directory_or_pythonpath(tmp_path):
    """The launcher as the master starts it here and as it runs at the end of an ssh
    session (``python3 -c BOOT`` in the remote home), started in a directory holding
    modules named like the standard library's, with PYTHONPATH naming it too: nothing
    of it is imported."""
    import os

    from qpy_master import launcher_pool

    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "planted_code_ran"
    for name in ("json", "selectors", "ctypes", "signal", "time", "gc"):
        (planted / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    env = {**os.environ, "PYTHONPATH": str(planted)}
    # here, as the master starts it; and as at the end of an ssh session (python3 there)
    local, preamble = launcher_pool.launcher_command(str(tmp_path / "run_local"), None,
                                                     sys.executable)
    remote, remote_preamble = launcher_pool.launcher_command(str(tmp_path / "run_remote"))
    assert remote[0] == "python3" and remote[1:] == local[1:-1] + [remote[-1]]
    _started_clean(local, planted, preamble, env)
    _started_clean([sys.executable, *remote[1:]], planted, remote_preamble, env)
    assert not marker.exists()
