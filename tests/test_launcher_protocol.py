"""The launcher's protocol as written in ``qpy_master/launcher.py`` (OPS, EVENTS): a real
launcher process refuses ops that lack a field or are unknown, with an ``error`` event,
and goes on serving; every event it sends fits EVENTS."""

from __future__ import annotations

import json
import subprocess
import sys

from qpy_master import launcher
from qpy_master.launcher_pool import launcher_command


def _events(proc: subprocess.Popen, count: int) -> list[dict]:
    return [json.loads(proc.stdout.readline()) for _ in range(count)]


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
