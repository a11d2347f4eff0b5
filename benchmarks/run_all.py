"""Run every benchmark in benchmarks/ in turn (what `make bench` does), then list how each one went.

Known scripts run in a fixed order (cheap first, the memory one last); any other script added to
benchmarks/ runs after them. A script that is missing is reported, not fatal. accuracy.py trains for
much longer than the rest (it has its own target, `make bench-accuracy`), so it runs only with
--accuracy: `make bench` stays in minutes. The review scripts (REVIEW) score trained models on held-out cohorts
and take arguments of their own: `make bench-review` runs them, never this runner.
Each prints its own baseline, project figure and ratio; this runner adds the wall time, the exit code and
the 1-minute load average before and after each script (the machine may be shared).

    python benchmarks/run_all.py                  # the full set (minutes)
    python benchmarks/run_all.py --tiny           # every script in its smoke mode
    python benchmarks/run_all.py --accuracy       # accuracy.py too (long)
    python benchmarks/run_all.py --skip memory    # leave some out (repeatable)
    python benchmarks/run_all.py --dry-run        # print the commands only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("prepare_slices", "loaders", "engine_overhead", "estimate", "memory", "accuracy")
REVIEW = ("held_out", "review_flag", "absent_levels", "realct_levels", "review_candidates")


def scripts(skip: list[str]) -> list[Path]:
    """The benchmark scripts present, known ones in ORDER first, then any others by name."""
    found = {path.stem: path for path in HERE.glob("*.py") if path.stem != Path(__file__).stem}
    found = {
        name: path
        for name, path in found.items()
        if not name.startswith("_") and name not in skip and name not in REVIEW
    }
    return [found[name] for name in ORDER if name in found] + [found[n] for n in sorted(found) if n not in ORDER]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="pass --tiny to every script (smoke test)")
    parser.add_argument("--skip", action="append", default=[], help="a script name to leave out (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--accuracy", action="store_true", help="also run accuracy.py (long: make bench-accuracy)")
    args = parser.parse_args()
    if not args.accuracy:
        args.skip.append("accuracy")
    missing = [name for name in ORDER if not (HERE / f"{name}.py").is_file() and name not in args.skip]
    results = []
    for script in scripts(args.skip):
        command = [sys.executable, str(script), *(["--tiny"] if args.tiny else [])]
        print(f"\n=== {script.name}: {' '.join(command)}", flush=True)
        if args.dry_run:
            continue
        load_before, start = os.getloadavg()[0], time.perf_counter()
        code = subprocess.run(command, cwd=HERE.parent).returncode
        results.append((script.name, code, time.perf_counter() - start, load_before, os.getloadavg()[0]))
    print(f"\n=== summary ({os.cpu_count()} cores)")
    for name, code, seconds, before, after in results:
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name:24s} {status:18s} {seconds:7.1f} s   load average {before:.1f} -> {after:.1f}")
    for name in missing:
        print(f"{name + '.py':24s} not present, skipped")
    if any(result[1] != 0 for result in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
