"""Where the benchmarks keep their raw figures (``bench/results/<name>.jsonl``, git-ignored),
and how they time a child process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """Return the checked-out commit, marked when the work tree differs from it."""
    run = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return run.stdout.strip()


def append(name: str, record: dict[str, Any]) -> Path:
    """Append one run's record to ``bench/results/<name>.jsonl``; return the file."""
    folder = ROOT / "bench" / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.jsonl"
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return path


def measure_child(args: list[str], name: str) -> dict[str, Any]:
    """Run a child that prints a JSON report (``seconds``, ``out``) on its last line; return
    the report with the process's wall time and peak RSS (``ru_maxrss``)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"{name} failed ({status}): {out}")
    report = json.loads(out.strip().splitlines()[-1])
    return {**report, "process_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
