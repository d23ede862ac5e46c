"""Run every benchmark (or those named) one after another: ``python benchmarks/run.py [NAME...]``.

Each ``benchmarks/bench_<name>.py`` is a standalone script that measures planaria against its
anchor side by side in one run, prints a table of medians and ratios, and writes
``bench-results/<name>.json``. Results worth keeping go into ``docs/BENCHMARKS.md`` by hand,
with the command that produced them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = set(argv)
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    if not scripts:
        print("no benchmark matched", argv, file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.stem)
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
