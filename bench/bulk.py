"""Bulk submission: 10,000 ``true`` jobs in one call (``qpy sub --file``), then run.

Prints one line: the wall time of the one ``qpy sub --file`` (to a running master) and
its rate, then the rate at which the jobs run from its return until all are recorded
done, each beside Python spawning ``sh -c true`` in the same run (the floor of any
pipeline that starts a shell per job). Targets: submitted in under 1 s, run at 500
jobs/s or more.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from common import QPY, Bench, live_jobs, spawn_rate

JOBS = 10_000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else JOBS
    bench = Bench()
    try:
        bench.qpy("status")  # the master and the multiuser run, as for a user at work
        path = bench.work / "jobs.txt"
        path.write_text("true\n" * n)
        t = time.perf_counter()
        out = subprocess.run([QPY, "sub", "-m", "0.1", "--file", str(path)], cwd=bench.work,
                             env=bench.env, check=True, capture_output=True, text=True).stdout
        submitted = time.perf_counter()
        assert out == f"Jobs 1-{n} received.\n", out
        db = sqlite3.connect(f"file:{bench.home / 'jobs.db'}?mode=ro", uri=True)
        while live_jobs(db):
            time.sleep(0.005)
        finished = time.perf_counter()
    finally:
        bench.close()
    base = spawn_rate(min(n, 3000))
    sub_s, run_s = submitted - t, finished - submitted
    print(f"bulk: {n:,} 'true' jobs submitted in one call in {sub_s:.2f} s "
          f"({n / sub_s:,.0f} jobs/s; target < 1 s), run at {n / run_s:,.0f} jobs/s "
          f"(target >= 500); baseline: python spawns sh -c true at {base:,.0f}/s "
          f"(submit {n / sub_s / base:.1f}x, run {n / run_s / base:.2f}x of it)")


if __name__ == "__main__":
    main()
