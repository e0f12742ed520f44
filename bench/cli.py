"""CLI cost on a running master: ``qpy sub``, ``qpy check`` (100 jobs) and ``qpy kill``
against ``python -c pass`` on the same interpreter (the product brief's target: <= 2x).

Prints one line. Also a shell loop's rate: 200 ``qpy sub true`` one after the other.
"""

from __future__ import annotations

import subprocess
import sys
import time

from common import QPY, Bench, install_note, timed

RUNS = 30
LOOP = 200


def main() -> None:
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        for _ in range(100):
            bench.qpy("sub", "true")
        base = timed([sys.executable, "-c", "pass"], RUNS)
        sub = timed([QPY, "sub", "true"], RUNS, cwd=bench.work, env=bench.env)
        check = timed([QPY, "check"], RUNS, cwd=bench.work, env=bench.env)
        kill = timed([QPY, "kill", "999999"], RUNS, cwd=bench.work, env=bench.env,
                     expect_failure=True)
        t = time.perf_counter()
        for _ in range(LOOP):
            subprocess.run([QPY, "sub", "true"], cwd=bench.work, env=bench.env, check=True,
                           capture_output=True)
        rate = LOOP / (time.perf_counter() - t)
    finally:
        bench.close()
    print(f"cli: qpy sub {sub:.1f} ms ({sub / base:.2f}x), qpy check of 100 jobs {check:.1f} ms "
          f"({check / base:.2f}x), qpy kill {kill:.1f} ms ({kill / base:.2f}x); a loop of "
          f"qpy sub {rate:.0f} jobs/s; baseline python -c pass {base:.1f} ms "
          f"(medians of {RUNS}){install_note()}")


if __name__ == "__main__":
    main()
