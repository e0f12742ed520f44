"""``qpy history`` of 100,000 runs (target: under 300 ms), on one line.

The runs are seeded through the master's own Records (``add_run``, one transaction) while
the master is stopped; then ``qpy history`` (the table) and ``qpy history --json`` are
timed, medians of RUNS, output read by this script as a user's pipe would. Baseline in
the same run: Python reading the same rows from SQLite and printing each one.
"""

from __future__ import annotations

import sys
import time

from common import QPY, ROOT, Bench, timed

sys.path.insert(0, str(ROOT))
from qpy.model import Job  # noqa: E402
from qpy.states import DONE, KILLED  # noqa: E402
from qpy_master.records import Records  # noqa: E402
from qpy_master.store import Store  # noqa: E402

RUNS = 10
COUNT = 100_000
FLOOR = ("import sqlite3, sys; sys.stdout.writelines('%s\\n' % (r,) for r in "
         "sqlite3.connect(sys.argv[1]).execute('SELECT * FROM runs'))")


def seed(bench: Bench, n: int) -> None:
    """``n`` runs of ``n // 4`` jobs (four runs each, as after requeues), over a month."""
    bench.qpy("finish")
    store = Store(bench.home / "jobs.db")
    records = Records(store)
    start = time.time() - 30 * 86400
    with store.transaction():
        for i in range(n):
            t = start + i * 25.0
            job = Job(id=i // 4 + 1, status=KILLED if i % 7 == 0 else DONE,
                      command=f"./simulate --case {i // 4}", cwd=str(bench.work), n_cores=2,
                      mem=4.0, node=f"node{i % 16}", t_queue=t, t_start=t + 1, t_end=t + 21,
                      exit_code=i % 3, time_limit=3600, cpu=39.5, peak_mem=1.25)
            records.add_run(job)
    store.close()


def main() -> None:
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        seed(bench, COUNT)
        bench.qpy("ctrlQueue", "pause")  # starts the master again
        lines = bench.qpy("history").count("\n")
        assert lines == COUNT + 1, lines
        table = timed([QPY, "history"], RUNS, cwd=bench.work, env=bench.env)
        as_json = timed([QPY, "history", "--json"], RUNS, cwd=bench.work, env=bench.env)
        since = timed([QPY, "history", "--since", "1d"], RUNS, cwd=bench.work, env=bench.env)
        floor = timed([sys.executable, "-c", FLOOR, str(bench.home / "jobs.db")], RUNS)
    finally:
        bench.close()
    print(f"history: qpy history of {COUNT:,} runs {table:.0f} ms (target < 300), --json "
          f"{as_json:.0f} ms, --since 1d {since:.0f} ms (medians of {RUNS}); baseline: python "
          f"printing the same rows from SQLite {floor:.0f} ms")


if __name__ == "__main__":
    main()
