"""How soon ``qpy wait`` returns after the last job it waits for ends (target: within 5 ms,
median), on one line.

Each round: two jobs that block reading a FIFO; ``qpy wait`` on both is started and left
to block in the master; the first job is released, then the last, by writing to its
FIFO (the job's last instruction: it exits at once). Measured from that write to the
exit of ``qpy wait``, and from the end its supervisor recorded (``t_end``) to that exit.
Baseline in the same run: Python waiting (``waitpid``) for an ``sh -c`` blocked on a FIFO
in the same way, from the write to ``waitpid`` returning.

``--trace``: the median of each hop from the supervisor reaping the last job to the
reply reaching ``qpy wait`` (``QPY_TRACE``, as ``bench/latency.py --trace``).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from common import QPY, Bench

RUNS = 30
TRACE = "--trace" in sys.argv
HOPS = ("supervisor: job reaped", "launcher: notified", "launcher: end sent",
        "master: launcher event", "master: end recorded", "master: wait woken",
        "master: wait answered", "wait: reply")


def hops(path: str) -> str:
    """Median milliseconds of each hop, from each job's reaping to a wait's reply."""
    marks = sorted((int(t), label) for t, _, label in
                   (line.split(" ", 2) for line in open(path).read().splitlines()))
    runs, current = [], {}
    for t, label in marks:
        if label == HOPS[0]:
            current = {label: t}
        elif label in HOPS and current and label not in current:
            current[label] = t
            if label == HOPS[-1]:
                if len(current) == len(HOPS):  # the last job's end: it woke the wait
                    runs.append(current)
                current = {}
    steps: dict[str, list[float]] = {}
    for run in runs:
        seen = [h for h in HOPS if h in run]
        for a, b in zip(seen, seen[1:], strict=False):
            steps.setdefault(f"{a} -> {b}", []).append((run[b] - run[a]) / 1e6)
    return "; ".join(f"{name} {statistics.median(v):.3f}" for name, v in steps.items())


def _exit_time(proc: subprocess.Popen, seen: list[float]) -> None:
    proc.wait()
    seen.append(time.time())


def _blocked(pid: int) -> bool:
    """Whether ``qpy wait`` holds a socket (its request to the master)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def one_round(bench: Bench, i: int) -> tuple[float, float]:
    fifos = [bench.work / f"end{i}_{k}" for k in range(2)]
    jobs = []
    for fifo in fifos:
        os.mkfifo(fifo)
        jobs.append(bench.qpy("sub", "-m", "0.1", f"read x < {fifo}").split()[1])
    waiter = subprocess.Popen([QPY, "wait", *jobs], cwd=bench.work, env=bench.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _blocked(waiter.pid):
        time.sleep(0.01)
    time.sleep(0.3)  # it has sent its request and blocks in the master now
    seen: list[float] = []
    thread = threading.Thread(target=_exit_time, args=(waiter, seen))
    thread.start()
    for fifo in fifos:
        with open(fifo, "w") as f:  # opens once the job reads: it runs
            t0 = time.time()
            f.write("x\n")
        if fifo is fifos[0]:
            time.sleep(0.05)  # the first ends well before the last
    thread.join()
    if waiter.returncode != 0:
        raise RuntimeError(f"qpy wait exited {waiter.returncode}")
    record = json.loads(bench.qpy("check", "--json", jobs[-1]))["jobs"][0]
    t_end = datetime.datetime.fromisoformat(record["t_end"].replace("Z", "+00:00"))
    return (seen[0] - t0) * 1000, (seen[0] - t_end.timestamp()) * 1000


def baseline(bench: Bench, i: int) -> float:
    fifo = bench.work / f"base{i}"
    os.mkfifo(fifo)
    proc = subprocess.Popen(["/bin/sh", "-c", f"read x < {fifo}"])
    seen: list[float] = []
    thread = threading.Thread(target=_exit_time, args=(proc, seen))
    thread.start()
    with open(fifo, "w") as f:
        t0 = time.time()
        f.write("x\n")
    thread.join()
    return (seen[0] - t0) * 1000


def main() -> None:
    if TRACE:
        sys.argv.remove("--trace")
        os.environ["QPY_TRACE"] = f"/tmp/qpy-trace-{os.getpid()}"
    bench = Bench()
    try:
        bench.qpy("sub", "-m", "0.1", "true")  # start the daemons and the launcher
        rounds = [one_round(bench, i) for i in range(RUNS)]
        base = statistics.median(baseline(bench, i) for i in range(RUNS))
    finally:
        bench.close()
    if TRACE:
        print(f"trace wait (medians, ms): {hops(os.environ['QPY_TRACE'])}")
        os.unlink(os.environ["QPY_TRACE"])
    from_write = statistics.median(r[0] for r in rounds)
    from_end = statistics.median(r[1] for r in rounds)
    print(f"wait: qpy wait returns {from_end:.2f} ms after the last job's recorded end "
          f"(target <= 5), {from_write:.2f} ms after its last instruction (medians of "
          f"{RUNS}); baseline: python waitpid on sh -c {base:.2f} ms")


if __name__ == "__main__":
    main()
