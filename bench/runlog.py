"""Where the benchmarks keep their raw figures: ``bench/results/<name>.jsonl`` (git-ignored)."""

from __future__ import annotations

import json
import subprocess
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
