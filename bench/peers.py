"""qpy beside task-spooler (``tsp``, a C queue for one host), measured in one run.

Installs nothing: without ``tsp`` (Debian's task-spooler) on the PATH it says so and
exits. Each figure is a median, for qpy (on this machine as its only node) and for
tsp, and qpy's is printed as a ratio to tsp's:

* sub: the wall time of submitting one ``true`` job (``qpy sub true`` / ``tsp true``);
* submit-to-start: from the submit command returning to the job's first instruction;
* end-to-next-start: from a job's end to the next queued job's first instruction, with
  one slot (tsp -S 1) or a job that takes every core (qpy -n CORES);
* loop: one client submitting 500 ``true`` jobs back to back, in jobs per second.

qpy runs every job in the user's login shell (``SHELL -c COMMAND``: the manual's
contract), tsp runs what it is given, here ``sh -c COMMAND``. Where the login shell is
not ``sh`` (bash, as a rule), submit-to-start and end-to-next-start are also measured
for tsp running that same shell, and qpy's ratio to those is printed beside: what qpy
costs beyond starting the same shell.

Floor in the same run: ``python -c pass`` on this interpreter (what any Python command
line costs at least).
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import QPY, Bench, install_note, timed
from latency import first_instruction

RUNS = 20
LOOP = 500


class Tsp:
    """A private task-spooler server: its own socket and output directory."""

    def __init__(self, slots: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="qpy-bench-tsp-")
        self.env = {**os.environ, "TS_SOCKET": os.path.join(self.dir, "socket"),
                    "TMPDIR": self.dir, "TS_MAXFINISHED": "1000"}
        self.run("-S", str(slots))

    def run(self, *args: str) -> str:
        return subprocess.run(["tsp", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def close(self) -> None:
        """End the server and remove its directory once it has exited: a dying server
        still writes a file there, which left the directory behind."""
        import psutil

        server = [p for p in psutil.process_iter(["name", "environ"])
                  if p.info["name"] in ("tsp", "ts")
                  and (p.info["environ"] or {}).get("TS_SOCKET") == self.env["TS_SOCKET"]]
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True)
        psutil.wait_procs(server, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Qpy:
    """qpy in a bench home, with the same four operations as Tsp."""

    def __init__(self) -> None:
        self.bench = Bench()
        self.env, self.work = self.bench.env, self.bench.work
        self.all_cores = str(self.bench.node_cores)
        self.bench.qpy("sub", "-m", "0.1", "true")  # the daemons and the launcher run

    def submit(self, command: str, *options: str) -> None:
        subprocess.run([QPY, "sub", "-m", "0.1", *options, command], cwd=self.work,
                       env=self.env, check=True, capture_output=True)

    def close(self) -> None:
        self.bench.close()


def sub_ms(argv: list[str], env: dict, cwd: str) -> float:
    return timed(argv, RUNS, env=env, cwd=cwd)


def to_start(submit, work: str, tag: str = "") -> float:
    def trigger(fifo: str) -> float:
        submit(f"echo > {fifo}")
        return time.perf_counter()

    return statistics.median(first_instruction(f, lambda f=f: trigger(f))
                             for f in (os.path.join(work, f"{tag}s{i}") for i in range(RUNS)))


def to_next(submit_hold, submit_next, work: str, tag: str = "") -> float:
    samples = []
    for i in range(RUNS):
        go, start = os.path.join(work, f"{tag}go{i}"), os.path.join(work, f"{tag}n{i}")
        os.mkfifo(go)
        submit_hold(f"read x < {go}")

        def end_first(start: str = start, go: str = go) -> float:
            submit_next(f"echo > {start}")
            with open(go, "w") as f:  # opens once the first job runs
                t0 = time.perf_counter()
                f.write("x\n")
            return t0

        samples.append(first_instruction(start, end_first))
    return statistics.median(samples)


def loop_rate(argv: list[str], env: dict, cwd: str) -> float:
    t = time.perf_counter()
    for _ in range(LOOP):
        subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return LOOP / (time.perf_counter() - t)


def login_shell() -> str | None:
    """The shell qpy runs jobs in here, if it is not ``sh``."""
    shell = os.path.basename(pwd.getpwuid(os.getuid()).pw_shell)
    return None if shell in ("", "sh") else shell


def measure_tsp() -> dict[str, float]:
    tsp = Tsp(slots=1)
    try:
        work = tsp.dir
        figures = {"sub": sub_ms(["tsp", "true"], tsp.env, work)}
        tsp.run("-w")  # idle again
        shells = {"": "sh", "login ": login_shell()}
        for key, shell in shells.items():
            if shell is not None:
                def run(command: str, shell: str = shell) -> None:
                    tsp.run(shell, "-c", command)

                figures[key + "start"] = to_start(run, work, shell)
                figures[key + "next"] = to_next(run, run, work, shell)
                tsp.run("-w")
        figures["loop"] = loop_rate(["tsp", "true"], tsp.env, work)
    finally:
        tsp.close()
    return figures


def measure_qpy() -> dict[str, float]:
    qpy = Qpy()
    try:
        work = str(qpy.work)
        figures = {"sub": sub_ms([QPY, "sub", "-m", "0.1", "true"], qpy.env, work)}
        figures["start"] = to_start(qpy.submit, work)
        figures["next"] = to_next(lambda c: qpy.submit(c, "-n", qpy.all_cores),
                                  lambda c: qpy.submit(c, "-n", qpy.all_cores), work)
        figures["loop"] = loop_rate([QPY, "sub", "-m", "0.1", "true"], qpy.env, work)
    finally:
        qpy.close()
    return figures


def same_shell(qpy: dict[str, float], tsp: dict[str, float], key: str) -> str:
    """qpy's figure beside tsp's running the login shell qpy runs jobs in, if not sh."""
    other = tsp.get("login " + key)
    if other is None:
        return ""
    return f" ({qpy[key] / other:.2f}x tsp running {login_shell()} -c, {other:.2f} ms)"


def main() -> None:
    if shutil.which("tsp") is None:
        print("peers: task-spooler (tsp) is not installed; nothing to compare with")
        return
    floor = timed([sys.executable, "-c", "pass"], RUNS)
    tsp, qpy = measure_tsp(), measure_qpy()
    ratio = {k: qpy[k] / tsp[k] for k in ("sub", "start", "next")}
    print(f"peers: sub qpy {qpy['sub']:.2f} ms = {ratio['sub']:.2f}x tsp {tsp['sub']:.2f} ms; "
          f"submit-to-start qpy {qpy['start']:.2f} ms = {ratio['start']:.2f}x tsp "
          f"{tsp['start']:.2f} ms{same_shell(qpy, tsp, 'start')}; end-to-next-start qpy "
          f"{qpy['next']:.2f} ms = {ratio['next']:.2f}x tsp {tsp['next']:.2f} ms"
          f"{same_shell(qpy, tsp, 'next')}; {LOOP}-sub loop qpy "
          f"{qpy['loop']:.0f}/s = {qpy['loop'] / tsp['loop']:.2f}x tsp {tsp['loop']:.0f}/s; "
          f"floor python -c pass {floor:.2f} ms (qpy sub {qpy['sub'] / floor:.2f}x); "
          f"medians of {RUNS}{install_note()}")


if __name__ == "__main__":
    main()
