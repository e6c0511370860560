"""The data folder holds personal data: dmp creates it and everything in it for its own
user only (folders 0700, files 0600), whatever the umask it was started with."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.served import serve_env


def _dmp(data_dir: Path, *args: str) -> None:
    env = serve_env(data_dir)
    # A permissive umask, as a shell may have: dmp must not rely on a strict one.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0o002); from dmp.cli import main; "
            "sys.argv[0] = 'dmp'; main(sys.argv[1:])",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr


def test_the_data_folder_and_its_files_are_the_users_alone(tmp_path: Path) -> None:
    """After demo data, a matrix build and a segment run, no folder or file under the data
    folder (Redis's files, the event log, imports, snapshots) is open to group or others."""
    data = tmp_path / "data"
    _dmp(data, "synth", "--persons", "30", "--days", "5")
    _dmp(data, "segments", "run")
    open_to_others = [
        f"{oct(stat.S_IMODE(path.lstat().st_mode))} {path.relative_to(tmp_path)}"
        for path in [data, *data.rglob("*")]
        if not path.is_socket() and stat.S_IMODE(path.lstat().st_mode) & 0o077
    ]
    assert open_to_others == []
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert any(p.suffix == ".parquet" for p in data.rglob("*")), "the run wrote files"
    assert os.access(data, os.R_OK | os.W_OK | os.X_OK)
