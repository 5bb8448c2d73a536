"""An older commit and this tree, side by side, in one run on one machine:

    .venv/bin/python bench/compare.py --base REV [--rounds N] SCRIPT [ARGS ...]

Checks REV out into a temporary git worktree, then runs bench/SCRIPT with ARGS alternately
under REV's code and under this tree's (REV, this, REV, this, ... N rounds each), so that
both see the same machine, database and background load; a figure from an earlier day is not
a comparison. Each run uses its own tree's copy of the script, package, simulator and
migrations (PYTHONPATH points at that tree; this venv's installed packages serve both).
Prints every run's output under its label. The worktree is removed at the end.

Example: `bench/compare.py --base 630d4e6 bench_pipeline.py --runs 10000 --enqueue-ids 0
--ceiling-runs 2000 --database-url postgresql://postgres@127.0.0.1/test`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]


def run(tree: Path, script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"(exit {done.returncode})\n{done.stdout}{done.stderr[-2000:]}"
    return done.stdout


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", required=True, help="the older commit (any git revision)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("script", help="a benchmark file of bench/, e.g. bench_pipeline.py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments, the same for both")
    opts = p.parse_args()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", opts.base],
        cwd=TREE,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=TREE, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="hr-bench-base-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), commit], cwd=TREE, check=True
        )
        try:
            for round_ in range(1, opts.rounds + 1):
                for label, tree in ((f"base {commit}", base), (f"this tree {here}", TREE)):
                    print(f"\n== round {round_}: {label}", flush=True)
                    print(run(tree, opts.script, opts.args), flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=TREE, check=False
            )


if __name__ == "__main__":
    main()
