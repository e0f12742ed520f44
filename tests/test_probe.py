"""Node monitoring's measurements (qpy_multiuser/probe.py), on real processes of this
machine: outsiders are busy processes that no qpy launcher started; qpy's own are told
apart by their ancestry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import wait_for

from qpy_multiuser import monitor, probe

BUSY_LOOP = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"


def busy(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP, *extra],
                            stdin=subprocess.DEVNULL)


def test_a_busy_process_not_started_by_qpy_is_an_outsider():
    sampler = probe.Sampler(busy=0.01)  # a shared, loaded machine may give it little CPU
    sampler.outsiders()  # the first sample only sets the counters
    outsider = busy()
    try:
        # the loop is busy for as long as it lives: it must show up in a sample. CPU time
        # is counted in clock ticks, so each sample needs a window of several ticks.
        def counted() -> bool:
            time.sleep(0.3)  # the measuring window, not a wait for an event
            return sampler.outsiders() >= 1

        wait_for(counted, 60, "the busy process to be counted")
        parents = {outsider.pid: os.getpid()}
        assert not probe._is_qpy(outsider.pid, parents, {})
    finally:
        outsider.kill()
        outsider.wait()


def test_processes_below_a_qpy_launcher_are_not_outsiders(tmp_path):
    """A 'launcher' (its command line carries the marker) whose child is busy."""
    script = tmp_path / "launcher.py"
    script.write_text("import subprocess, sys\n"
                      f"p = subprocess.Popen([sys.executable, '-c', {BUSY_LOOP!r}])\n"
                      "print(p.pid, flush=True)\np.wait()\n")
    launcher = subprocess.Popen([sys.executable, str(script), "qpy-launcher"],
                                stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(launcher.stdout.readline())
        parents = {child: launcher.pid, launcher.pid: os.getpid()}
        assert probe._is_qpy(child, parents, {})
        assert not probe._is_qpy(os.getpid(), {os.getpid(): os.getppid()}, {})
    finally:
        launcher.kill()
        launcher.wait()
        if child is not None:
            try:
                os.kill(child, 9)
            except OSError:
                pass


def test_a_sample_has_the_size_load_and_the_disk_of_check_dir(tmp_path):
    sample = probe.Sampler(str(tmp_path)).sample()
    assert set(sample) == set(probe.SAMPLE)  # the protocol as written in probe.py
    assert sample["cores"] == len(os.sched_getaffinity(0))
    assert sample["mem_total"] > 0 and 0 <= sample["mem_used"] <= sample["mem_total"]
    assert sample["load"] >= 0 and sample["outsiders"] >= 0
    assert sample["disk"]["path"] == str(tmp_path)
    assert sample["disk"]["total"] >= sample["disk"]["used"] >= 0
    missing = probe.Sampler(str(tmp_path / "gone")).sample()["disk"]
    assert "error" in missing and "gone" in missing["error"]


def test_the_probe_program_prints_samples_and_ends_with_its_input(tmp_path):
    """As the monitor runs it on a node: source down stdin, samples up, EOF ends it."""
    from qpy import ssh

    proc = subprocess.Popen([sys.executable,
                             *ssh.python_stdin_program("qpy-probe")[1:], "0.05", str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(monitor.probe_preamble())
    proc.stdin.flush()
    first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
    assert first["cores"] == second["cores"] == len(os.sched_getaffinity(0))
    assert first["disk"]["path"] == str(tmp_path)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
