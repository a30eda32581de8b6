"""Wall time and peak RSS of one child process (os.wait4 gives that child's own rusage)."""

from __future__ import annotations

import os
import subprocess
import time


def run_measured(cmd: list[str], cwd: str, log_path: str | None = None) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS GiB). Raises if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path or os.devnull, "w") as log:
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed with exit code {proc.returncode}; see {log_path}")
    return wall, usage.ru_maxrss / 2**20
