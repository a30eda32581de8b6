"""Wall time and peak RSS of one child process.

Not from getrusage/wait4: on Linux a child's ru_maxrss starts at the parent's RSS at
fork time (it survives execve), so a bench that loaded a model first would charge it
to every child. VmHWM in /proc/<pid>/status belongs to the child's own address space;
we poll it (it only grows) and keep the last value read before the child exits.
"""

from __future__ import annotations

import os
import subprocess
import time


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak RSS (VmHWM) of a process in KiB, 0 where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], cwd: str, log_path: str | None = None) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS GiB). Raises if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    peak = 0
    with open(log_path or os.devnull, "w") as log:
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kib(proc.pid))
            time.sleep(0.1)
        wall = time.time() - start
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed with exit code {proc.returncode}; see {log_path}")
    return wall, peak / 2**20
