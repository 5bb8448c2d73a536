"""`make bench`: every benchmark in turn, each printing its own table.

Extra arguments are not passed through; run a script directly for its options.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_store.py", "bench_ratelimit.py", "bench_pipeline.py"]

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        print(f"\n== {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
