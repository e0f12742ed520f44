"""Pipeline throughput: 1,000 ``true`` jobs queued while paused, then ``continue``; prints
the jobs per second until all are recorded, the wall time of the 1,000 submissions, and,
as a baseline in the same run, how fast Python spawns ``sh -c true`` here.

``--nodes N`` (root): the jobs run on N network-namespace nodes, each launcher at the end
of an ssh session.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import QPY, Bench, create_cost, live_jobs, nodes_option, spawn_rate

JOBS = 1000


def submit_all(bench: Bench, n: int) -> float:
    """Wall time of n submissions from a shell-like loop, two at a time (2 cores)."""
    def one(_: int) -> None:
        subprocess.run([QPY, "sub", "-m", "0.1", "true"], cwd=bench.work, env=bench.env,
                       check=True, capture_output=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t


def run_rate(bench: Bench, n: int) -> float:
    db = sqlite3.connect(f"file:{bench.home / 'jobs.db'}?mode=ro", uri=True)
    t = time.perf_counter()
    bench.qpy("ctrlQueue", "continue")
    while live_jobs(db):
        time.sleep(0.005)
    return n / (time.perf_counter() - t)


def main() -> None:
    nodes = nodes_option(sys.argv)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else JOBS
    bench = Bench(nodes)
    try:
        if nodes:
            bench.wait_nodes_up()
        bench.qpy("ctrlQueue", "pause")
        sub_wall = submit_all(bench, n)
        create = create_cost(bench.work)
        rate = run_rate(bench, n)
    finally:
        bench.close()
    base = spawn_rate(n)
    where = f" on {nodes} ssh nodes" if nodes else ""
    print(f"throughput{where}: {rate:.0f} jobs/s for {n} queued 'true' jobs; {n} submissions took "
          f"{sub_wall:.1f} s ({sub_wall / n * 1000:.1f} ms each, 2 at a time); baseline: "
          f"python spawns sh -c true at {base:.0f}/s; creating a file costs {create:.0f} us "
          f"here now (each job creates 2)")


if __name__ == "__main__":
    main()
