"""Costs that must not grow with the number of stored jobs.

Prints one line: ``qpy sub`` wall time with an empty store, with 100,000 finished jobs
recorded and with 100,000 jobs queued (a normal one goes last, a ``--priority high`` one
first: the queue is not renumbered) (ratios; target <= 1.2x), and ``qpy check`` of 10,000
jobs (target < 300 ms).
The store is seeded through the master's own Store while the master is stopped.
"""

from __future__ import annotations

import sys
import time

from common import QPY, ROOT, Bench, timed

sys.path.insert(0, str(ROOT))
from qpy.model import Job  # noqa: E402
from qpy.states import DONE, QUEUE  # noqa: E402
from qpy_master.store import Store  # noqa: E402

RUNS = 20


def seed(bench: Bench, n: int, queued: bool = False) -> None:
    """``n`` finished jobs (or queued ones, in ID order) in the store."""
    bench.qpy("finish")
    store = Store(bench.home / "jobs.db")
    now = time.time()
    with store.transaction():
        env = store.env_id({"PATH": "/usr/bin:/bin"})
        for i in range(n):
            job = Job(id=0, status=QUEUE if queued else DONE, command=f"echo {i}",
                      cwd=str(bench.work), mem=0.1, t_queue=now, env_id=env)
            job.id = store.insert(job, float(i + 1))
        if not queued:
            store.db.execute("UPDATE jobs SET status = 'done', t_start = ?, t_end = ?, "
                             "exit_code = 0", (now, now))
    store.close()


def sub_ms(bench: Bench, *options: str) -> float:
    return timed([QPY, "sub", "-m", "0.1", *options, "true"], RUNS, cwd=bench.work,
                 env=bench.env)


def main() -> None:
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        empty = sub_ms(bench)
        seed(bench, 100_000)
        full = sub_ms(bench)
    finally:
        bench.close()
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        seed(bench, 100_000, queued=True)
        bench.qpy("status")  # the master has loaded the queue
        queued = sub_ms(bench)
        first = sub_ms(bench, "--priority", "high")
    finally:
        bench.close()
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        seed(bench, 10_000)
        check = timed([QPY, "check"], 10, cwd=bench.work, env=bench.env)
        check_json = timed([QPY, "check", "--json"], 10, cwd=bench.work, env=bench.env)
    finally:
        bench.close()
    print(f"scale: qpy sub {empty:.1f} ms with an empty store, {full:.1f} ms with 100,000 jobs "
          f"stored ({full / empty:.2f}x), {queued:.1f} ms with 100,000 queued "
          f"({queued / empty:.2f}x; --priority high, so first: {first:.1f} ms, "
          f"{first / empty:.2f}x); qpy check of 10,000 jobs {check:.0f} ms "
          f"(--json {check_json:.0f} ms)")


if __name__ == "__main__":
    main()
