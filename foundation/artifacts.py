"""Artifact directories: atomic writes, hashes, resource figures and manifest.json.

Every stage writes one directory; it is built in a temporary sibling and renamed into
place only when complete, so a failed run never leaves a half artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from foundation.interrupts import raise_if_interrupted

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
PARTIAL_SUFFIX = ".partial"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> str:
    """One hash for a set of files: their relative names and contents, order-independent."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    VmHWM where /proc has it: on Linux ru_maxrss survives execve, so a process started
    by a large parent would report the parent's RSS at fork time as its own peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    versions = {"python": platform.python_version()}
    for name in ("gemma-edge", *packages):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def cache_root() -> Path:
    """$GEMMA_EDGE_CACHE, else $XDG_CACHE_HOME/gemma-edge, else ~/.cache/gemma-edge."""
    if env := os.environ.get("GEMMA_EDGE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemma-edge"


def partial_dirs(target: str | Path) -> list[Path]:
    """The temporary directories `atomic_output_dir` is building (or a killed process left)
    for `target`."""
    target = Path(target)
    return sorted(target.parent.glob(f".{target.name}.*{PARTIAL_SUFFIX}"))


def remove_stale_partials(target: str | Path) -> None:
    """Remove partial directories for `target` whose process is gone (killed with -9, or
    the machine went down): each partial's name carries its owner's pid."""
    for partial in partial_dirs(target):
        owner = partial.name.removesuffix(PARTIAL_SUFFIX).split(".")[-2]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block: processes that
    would make the same thing (a cache entry, a shared export) wait, then find it made.
    The OS drops the lock when its process dies, so a killed holder never blocks the next."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fp32_weight_bytes(model) -> int:
    """What a model's weights take in float32 (a shared tensor counted once): the size of
    an fp32 export, and an upper bound for every quantized one."""
    return 4 * sum(p.numel() for p in model.parameters())


def tree_bytes(directory: str | Path) -> int:
    """Bytes of every file under `directory`."""
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def require_free_space(target: str | Path, needs_bytes: int, what: str) -> None:
    """Refuse, before any work, to write `what` (about `needs_bytes`) at `target` on a disk
    without room for it. A disk that fills mid-write is worse than a refusal: some
    converters abort the process on a failed write instead of raising."""
    from foundation.errors import GemmaEdgeError

    target = Path(target).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needs_bytes:
        raise GemmaEdgeError(f"{what} needs about {_size(needs_bytes)} free at {target.parent}, "
                             f"and the disk has {_size(free)}",
                             "free disk space there or write to a disk with room")


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, *, overwrite: bool = False,
                      needs_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary directory that becomes `target` only if the block succeeds; on
    failure nothing is left, not even the parent directories it had to create. With
    `needs_bytes`, a disk without that much room is refused first; a disk that fills while
    the block writes is a one-line error, not an OSError."""
    import errno

    from foundation.errors import GemmaEdgeError

    target = Path(target)
    blocking = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise GemmaEdgeError(f"cannot write {target}: {blocking} is a file",
                             "choose an output directory that is not a file")
    if needs_bytes:
        require_free_space(target, needs_bytes, f"writing {target.name}")
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=PARTIAL_SUFFIX,
                                dir=target.parent))
    committed = False
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise GemmaEdgeError(f"the disk filled while writing {target} (nothing was kept)",
                                 "free disk space there or write to a disk with room") from e
        raise_if_interrupted()  # a Ctrl-C swallowed on the way must not commit the artifact
        if target.exists():
            if not overwrite:
                raise FileExistsError(target)
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        committed = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not committed:
            for parent in created:  # deepest first; only if still empty
                with contextlib.suppress(OSError):
                    parent.rmdir()


def write_manifest(
    directory: Path,
    *,
    stage: str,
    inputs: dict[str, Any],
    outputs: Iterable[str] | None = None,
    started: float,
    extra: dict[str, Any] | None = None,
    packages: Iterable[str] = (),
) -> dict[str, Any]:
    """Write manifest.json: what was made, from what (with hashes), by which tools, at what cost."""
    files = sorted(outputs) if outputs is not None else sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
        and p.name != MANIFEST_NAME
    )
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "stage": stage,
        "inputs": inputs,
        "files": {
            name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
            for name in files
        },
        "tools": tool_versions("torch", "transformers", *packages),
        "wall_seconds": round(time.time() - started, 3),
        "peak_rss_bytes": peak_rss_bytes(),
        **(extra or {}),
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """manifest.json as a dict; a damaged one is an input error naming the file."""
    from foundation.errors import GemmaEdgeError

    file = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise GemmaEdgeError(f"{file} is not a readable manifest ({type(exc).__name__})",
                             "make the artifact again; a manifest is never edited by hand") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) \
            or not isinstance(data.get("inputs", {}), dict):
        raise GemmaEdgeError(f"{file} is not a gemma-edge manifest (no files table)",
                             "make the artifact again; a manifest is never edited by hand")
    return data


def require_manifest(directory: str | Path, what: str = "artifact",
                     made_by: str = "gemma-edge export or quantize") -> dict[str, Any]:
    """The directory's manifest, or the one-line error every command gives for a wrong path."""
    from foundation.errors import GemmaEdgeError

    if not (Path(directory) / MANIFEST_NAME).is_file():
        raise GemmaEdgeError(f"{directory} is not a gemma-edge {what} (no {MANIFEST_NAME})",
                             f"pass a directory written by {made_by}")
    return read_manifest(directory)
