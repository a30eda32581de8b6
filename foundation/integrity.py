"""A manifest is a promise: every command verifies an artifact or package against it
before using it. One rule, here: the manifest lists exactly the files present (plain
relative names inside the directory, no links leading out), and each file's size and
sha256 match. The only unlisted entry allowed is an artifact's `check/` directory, which
`gemma-edge check` writes afterwards and which records the hashes it verified.

Hashing runs at ~1.6 GB/s here; results are cached by path, size, mtime, ctime and inode
(ctime cannot be set back by a user, so any write to a file re-hashes it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from foundation.artifacts import MANIFEST_NAME, cache_root, require_manifest, sha256_file
from foundation.errors import GemmaEdgeError
from foundation.formats import CHECK_DIR

_memo: dict[tuple, str] = {}


def _cache_file() -> Path:
    return cache_root() / "hashes.json"


def cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key in _memo:
        return _memo[key]
    disk = _load_cache()
    digest = disk.get(repr(key))
    if digest is None and st.st_size >= 1 << 24:  # small files hash faster than a cache write
        digest = sha256_file(path)
        disk[repr(key)] = digest
        _save_cache(disk)
    _memo[key] = digest or sha256_file(path)
    return _memo[key]


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(data: dict[str, str]) -> None:
    file = _cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(dict(list(data.items())[-512:])))
        os.replace(tmp, file)
    except OSError:  # a read-only home: hashing still works, only slower next time
        pass


def plain_name(name: str, where: Path) -> str:
    """A manifest entry must be a relative path inside its directory."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name:
        raise GemmaEdgeError(f"{where / MANIFEST_NAME} lists '{name}', which is not a plain "
                             "name inside the directory", "make the artifact again")
    return name


ARTIFACT_STAGES = ("export", "quantize")  # what check, quantize and package take


def verify_artifact(directory: str | Path, what: str = "artifact",
                    made_by: str = "gemma-edge export or quantize",
                    stages: tuple[str, ...] = ARTIFACT_STAGES) -> dict[str, Any]:
    """The manifest, after every file was checked against it (GemmaEdgeError, exit 2, if not)."""
    root = Path(directory)
    manifest = require_manifest(root, what, made_by)
    fix = f"make the {what} again with {made_by}"
    if manifest.get("stage") not in stages:
        raise GemmaEdgeError(f"{root} is a gemma-edge {manifest.get('stage')} output, not "
                             f"{'an' if what[0] in 'aeiou' else 'a'} {what}",
                             f"pass a directory written by {made_by}")
    listed = manifest["files"]
    model = manifest.get("model_file")
    if model is not None and (not isinstance(model, str) or model not in listed):
        raise GemmaEdgeError(f"{root / MANIFEST_NAME} names model_file {model!r}, which it does "
                             "not list as one of its files", fix)
    real_root = root.resolve()
    for name, entry in listed.items():
        file = root / plain_name(name, root)
        if file.is_symlink() or not file.resolve().is_relative_to(real_root):
            raise GemmaEdgeError(f"{what} file {name} in {root} is a link", fix)
        if not file.is_file():
            raise GemmaEdgeError(f"{what} file {name} is missing from {root}", fix)
        if not isinstance(entry, dict) or file.stat().st_size != entry.get("bytes") \
                or cached_sha256(file) != entry.get("sha256"):
            raise GemmaEdgeError(f"{what} file {name} in {root} does not match its manifest "
                                 "(sha256 differs): it was modified or damaged", fix)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if (p.is_file() or p.is_symlink()) and p.name != MANIFEST_NAME
               and p.relative_to(root).parts[0] != CHECK_DIR}
    extra = sorted(present - set(listed))
    if extra:
        raise GemmaEdgeError(f"{root} holds {len(extra)} file(s) its manifest does not list "
                             f"(first: {extra[0]})", fix)
    return manifest


def content_hash(manifest: dict[str, Any]) -> str:
    """One hash for everything an artifact holds: its files' names and sha256s."""
    import hashlib

    table = sorted((name, entry["sha256"]) for name, entry in manifest["files"].items())
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()


def refuse_overlap(out: str | Path, *inputs: str | Path) -> None:
    """An output may not be, contain, or lie inside an input: --overwrite would destroy it."""
    target = Path(out).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if target == src or target.is_relative_to(src) or src.is_relative_to(target):
            raise GemmaEdgeError(f"the output {out} would overwrite the input {item}",
                                 "choose an --out outside the input")


def verify_package(path: str | Path) -> dict:
    """The package's manifest, after checking every listed file's sha256 (exit 2 if not)."""
    path = Path(path)
    return verify_artifact(path, "package", "`gemma-edge package`", stages=("package",))
