"""Scheduling latency on this machine, medians of N runs, printed on one line:

* submit-to-start: from ``qpy sub`` returning to the job's first instruction (the job's
  shell opening a FIFO that this script is reading);
* end-to-next-start: from a job's end (we release it through a FIFO it waits on) to the
  first instruction of the next queued job, which needs all cores so it had to wait.

Baseline in the same run: Python spawning ``sh -c`` that opens a FIFO (the bare cost of
starting a shell job here).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time

from common import QPY, Bench, cores

RUNS = 30


def reader(path: str, box: list) -> threading.Thread:
    def run() -> None:
        with open(path) as f:
            f.read()
        box.append(time.perf_counter())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def submit_to_start(bench: Bench, n: int) -> float:
    samples = []
    for i in range(n):
        fifo = str(bench.work / f"start{i}")
        os.mkfifo(fifo)
        box: list = []
        thread = reader(fifo, box)
        subprocess.run([QPY, "sub", f"echo > {fifo}"], cwd=bench.work, env=bench.env,
                       check=True, capture_output=True)
        t0 = time.perf_counter()
        thread.join()
        samples.append((box[0] - t0) * 1000)
    return statistics.median(samples)


def end_to_next(bench: Bench, n: int) -> float:
    samples = []
    k = str(cores())
    for i in range(n):
        go, start = str(bench.work / f"go{i}"), str(bench.work / f"next{i}")
        os.mkfifo(go)
        os.mkfifo(start)
        bench.qpy("sub", "-n", k, "-m", "0.1", f"read x < {go}")
        box: list = []
        thread = reader(start, box)
        bench.qpy("sub", "-n", k, "-m", "0.1", f"echo > {start}")
        with open(go, "w") as f:  # opening blocks until the first job is running
            t0 = time.perf_counter()
            f.write("x\n")
        thread.join()
        samples.append((box[0] - t0) * 1000)
    return statistics.median(samples)


def baseline(bench: Bench, n: int) -> float:
    samples = []
    for i in range(n):
        fifo = str(bench.work / f"base{i}")
        os.mkfifo(fifo)
        box: list = []
        thread = reader(fifo, box)
        t0 = time.perf_counter()
        proc = subprocess.Popen(["/bin/sh", "-c", f"echo > {fifo}"])
        thread.join()
        proc.wait()
        samples.append((box[0] - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    bench = Bench()
    try:
        bench.qpy("sub", "-m", "0.1", "true")  # start the daemons outside the measurement
        s2s = submit_to_start(bench, RUNS)
        e2n = end_to_next(bench, RUNS)
        base = baseline(bench, RUNS)
    finally:
        bench.close()
    print(f"latency: submit-to-start {s2s:.2f} ms, end-to-next-start {e2n:.2f} ms (medians of "
          f"{RUNS}); baseline: python spawning sh -c {base:.2f} ms")


if __name__ == "__main__":
    main()
