"""Run the grammar-based pickle fuzzer and print what it found.

Generates ``--count`` programs (seeds ``--start`` .. ``--start + count - 1``) with
``tests/hostile/grammar.py``, loads and scans each one in worker processes under a memory
limit (``tests/hostile/grammar_worker.py``), and prints: outcomes, the load x scan agreement
table, every oracle violation with its seeds, and coverage (how many programs called a
computed value, built onto a global, crafted a dtype, ...). Failing programs are written to
``OUT/failures`` (``<seed>.pickle`` + ``<seed>.json``) to turn into regression tests.

    .venv/bin/python tools/grammar_fuzz.py --count 20000 --jobs 2 --out /tmp/gf

``--pythonpath DIR`` puts another copy of persistkit's ``src`` first on the workers' path
(e.g. a ``git archive`` of an older commit, to compare). Exit status 1 when any oracle
violation was found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from hostile.grammar_worker import (  # noqa: E402
    MEMORY_HEADROOM,
    run_seeds,
    save_failures,
    summary,
    violations,
)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the programs, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="programs to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--batch", type=int, default=200, help="programs per worker process")
    parser.add_argument("--out", type=Path, default=Path("/tmp/grammar-fuzz"))
    parser.add_argument(
        "--memory", type=int, default=MEMORY_HEADROOM, help="RLIMIT_AS headroom in bytes"
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="seconds without progress that make a hang"
    )
    parser.add_argument("--pythonpath", default=None, help="put this first on sys.path")
    parser.add_argument("--examples", type=int, default=8, help="seeds shown per violation")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        print(f"  {done}/{total} programs, {elapsed:.0f} s", file=sys.stderr, flush=True)

    records = run_seeds(
        range(args.start, args.start + args.count),
        args.out / "work",
        jobs=args.jobs,
        batch=args.batch,
        memory=args.memory,
        stall=args.stall,
        pythonpath=args.pythonpath,
        progress=progress,
    )
    with open(args.out / "records.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record, default=str) + "\n")
    report = summary(records, examples=args.examples)
    report += f"\nwall time: {time.monotonic() - started:.0f} s"
    failing = save_failures(records, args.out / "failures")
    report += f"\nfailing programs written to {args.out / 'failures'} ({len(failing)})"
    (args.out / "summary.txt").write_text(report + "\n")
    print(report)
    return 1 if any(violations(r) for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
