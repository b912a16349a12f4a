"""Grammar-based pickle fuzzing: random programs over the allowed globals never run code,
crash, hang or raise anything but PersistkitError, and ``scan`` agrees with ``load``.

The programs (tests/hostile/grammar.py) compose calls, BUILD, NEWOBJ(_EX), SETITEM(S),
APPEND(S), memo and stack opcodes - calling the results of calls and building onto them -
over globals from the allow-list, plus a few sinks that would create a marker file if any
code ran. They run in worker processes under an address-space limit, with a watchdog for
hangs (tests/hostile/grammar_worker.py). The oracle, per program:

- no marker file, no blocked process/ctypes/network event, no death by signal, no hang;
- ``persistkit.load`` raises only PersistkitError subclasses; calling predict-like methods
  on what loaded creates no marker and does not crash;
- a program the unpickler's invariants forbid (calls a computed value, calls a data class,
  pure function or constant with arguments, BUILDs onto a global, uses INST/OBJ/EXT/PERSID,
  names a global that is not allowed) never loads;
- ``audit_file`` (``persistkit scan``) agrees: load ok <=> clean, load refused as untrusted
  <=> untrusted, load damaged => error or untrusted.

A few hundred programs per run; ``PERSISTKIT_GRAMMAR_FUZZ=N`` runs N (``tools/grammar_fuzz.py``
runs tens of thousands and prints coverage). On failure the seeds are printed and the programs
written to ``PERSISTKIT_GRAMMAR_FUZZ_OUT`` (default: this test's tmp folder) as
``<seed>.pickle`` + ``<seed>.json``, ready to become regression tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from hostile.grammar_worker import run_seeds, save_failures, summary, violations

PROGRAMS = int(os.environ.get("PERSISTKIT_GRAMMAR_FUZZ", "400"))
# a fixed range far from the seeds tools/grammar_fuzz.py starts with by default
FIRST_SEED = 1_000_000


def test_grammar_programs_hold_the_oracle(tmp_path: Path) -> None:
    seeds = range(FIRST_SEED, FIRST_SEED + PROGRAMS)
    batch = max(60, -(-PROGRAMS // 4))  # a handful of worker processes
    records = run_seeds(seeds, tmp_path / "work", jobs=2, batch=batch, stall=60.0)
    assert len(records) == PROGRAMS, f"{PROGRAMS - len(records)} programs left no record"
    failing = [r for r in records if violations(r)]
    if failing:
        out = Path(os.environ.get("PERSISTKIT_GRAMMAR_FUZZ_OUT", tmp_path / "failures"))
        save_failures(records, out)
        report = summary(records, examples=10)
        details = "\n".join(
            f"  seed {r['seed']}: " + "; ".join(violations(r))[:300] for r in failing[:40]
        )
        raise AssertionError(
            f"{len(failing)} of {PROGRAMS} grammar programs break the oracle; programs in "
            f"{out}\n{details}\n\n{report}"
        )
