"""CLI start-up cost: ``qpy sub`` and ``qpy check`` (100 jobs) against ``import click``.

Prints one line; the ratios are what the product brief's target (<= 1.6x) is about.
"""

from __future__ import annotations

import sys

from common import QPY, Bench, timed

RUNS = 30


def main() -> None:
    bench = Bench()
    try:
        bench.qpy("ctrlQueue", "pause")
        for _ in range(100):
            bench.qpy("sub", "true")
        base = timed([sys.executable, "-c", "import click"], RUNS)
        sub = timed([QPY, "sub", "true"], RUNS, cwd=bench.work, env=bench.env)
        check = timed([QPY, "check"], RUNS, cwd=bench.work, env=bench.env)
    finally:
        bench.close()
    print(f"cli: qpy sub {sub:.1f} ms ({sub / base:.2f}x), qpy check of 100 jobs {check:.1f} ms "
          f"({check / base:.2f}x); baseline python -c 'import click' {base:.1f} ms "
          f"(medians of {RUNS})")


if __name__ == "__main__":
    main()
