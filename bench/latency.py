"""Scheduling latency on this machine, medians of N runs, printed on one line:

* submit-to-start: from ``qpy sub`` returning to the job's first instruction (the job's
  shell opening a FIFO that this script is reading);
* end-to-next-start: from a job's end (we release it through a FIFO it waits on) to the
  first instruction of the next queued job, which needs all cores so it had to wait.

Baseline in the same run: Python spawning ``sh -c`` that opens a FIFO (the bare cost of
starting a shell job here).

``--nodes N`` (root): the jobs run on node1 of N network-namespace nodes over ssh; the
baseline is then ``ssh node1 sh -c`` over an open multiplexed connection, what starting
each job with its own ssh command would cost at best.

``--trace``: where end-to-next-start goes. Every process on the path writes a timestamp
per hop (``QPY_TRACE``, ``qpy/trace.py``); the line printed gives the median of each hop,
from the job's end (this script writing to its FIFO) to the next job's first instruction.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

from common import QPY, Bench, hops, mark, nodes_option

RUNS = 30
TRACE = "--trace" in sys.argv


def first_instruction(fifo: str, trigger) -> float:
    """Milliseconds from the time ``trigger()`` returns to a job opening ``fifo`` for
    writing (its first instruction), read by a thread blocked on the FIFO."""
    os.mkfifo(fifo)
    seen: list[float] = []

    def read() -> None:
        with open(fifo) as f:
            seen.append(time.perf_counter())
            mark("next job: first instruction")
            f.read()

    thread = threading.Thread(target=read)
    thread.start()
    t0 = trigger()
    thread.join()
    return (seen[0] - t0) * 1000


def submit_to_start(bench: Bench, n: int, pin: list[str]) -> float:
    def submit(fifo: str) -> float:
        subprocess.run([QPY, "sub", *pin, f"echo > {fifo}"], cwd=bench.work, env=bench.env,
                       check=True, capture_output=True)
        return time.perf_counter()

    return statistics.median(first_instruction(f, lambda f=f: submit(f))
                             for f in (str(bench.work / f"start{i}") for i in range(n)))


def end_to_next(bench: Bench, n: int, pin: list[str]) -> float:
    """The first job holds every core until we end it; the second waits for its cores."""
    k = str(bench.node_cores)
    samples = []
    for i in range(n):
        go, start = str(bench.work / f"go{i}"), str(bench.work / f"next{i}")
        os.mkfifo(go)
        bench.qpy("sub", *pin, "-n", k, "-m", "0.1", f"read x < {go}")

        def end_first(start: str = start, go: str = go) -> float:
            bench.qpy("sub", *pin, "-n", k, "-m", "0.1", f"echo > {start}")
            with open(go, "w") as f:  # opening blocks until the first job is running
                t0 = time.perf_counter()
                mark("job: ends")
                f.write("x\n")
            return t0

        samples.append(first_instruction(start, end_first))
    return statistics.median(samples)


def baseline(bench: Bench, n: int, ssh: list[str]) -> float:
    procs = []

    def spawn(fifo: str) -> float:
        t0 = time.perf_counter()
        procs.append(subprocess.Popen([*ssh, "/bin/sh", "-c", f"'echo > {fifo}'"] if ssh
                                      else ["/bin/sh", "-c", f"echo > {fifo}"]))
        return t0

    result = statistics.median(first_instruction(f, lambda f=f: spawn(f))
                               for f in (str(bench.work / f"base{i}") for i in range(n)))
    for proc in procs:
        proc.wait()
    return result


def main() -> None:
    nodes = nodes_option(sys.argv)
    if TRACE:
        sys.argv.remove("--trace")
        os.environ["QPY_TRACE"] = f"/tmp/qpy-trace-{os.getpid()}"
    bench = Bench(nodes)
    pin, ssh = ([], [])
    try:
        if nodes:
            bench.wait_nodes_up()
            pin, ssh = ["-a", "node1"], ["ssh", "node1"]
            subprocess.run([*ssh, "true"], check=True)  # open the multiplexed connection
        bench.qpy("sub", *pin, "-m", "0.1", "true")  # start the daemons (and the launcher)
        if TRACE:
            end_to_next(bench, RUNS, pin)
            steps = hops(os.environ["QPY_TRACE"], "job: ends", "next job: first instruction")
            print(f"trace end-to-next-start (medians, ms): {steps}")
            os.unlink(os.environ["QPY_TRACE"])
            return
        s2s = submit_to_start(bench, RUNS, pin)
        e2n = end_to_next(bench, RUNS, pin)
        base = baseline(bench, RUNS, ssh)
    finally:
        bench.close()
    where, what = (f" (node1 of {nodes} over ssh)", "ssh node1 sh -c (multiplexed)") \
        if nodes else ("", "python spawning sh -c")
    print(f"latency{where}: submit-to-start {s2s:.2f} ms, end-to-next-start {e2n:.2f} ms "
          f"(medians of {RUNS}); baseline: {what} {base:.2f} ms")


if __name__ == "__main__":
    main()
