"""`gemma-edge build SPEC --stage NAME [--store DIR]`: one stage of the plan on its own.

A CI system fans a build out over machines: each job runs one stage. The stage's inputs
are found by content key, first in the build directory, then in the store (a directory
the CI system carries between jobs: an uploaded/downloaded artifact, a cache, a shared
volume). The store holds one entry per stage output, named by the stage's key:

    STORE/<key>/output/   the stage's output directory, exactly as a build writes it
    STORE/<key>/stage.json  which stage and source made it (for people; not trusted)

Keys do not depend on where a working copy lives (gemma_edge.stages.stage_key), so the
same spec computes the same keys on every machine. Nothing from the store is used before
it verifies: its manifest's hashes, and the key it records must be the key computed here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError
from gemma_edge.build_spec import BuildSpec
from gemma_edge.stages import REPORTS, ChildRun, Stage, output_state, run_stages, stage_key, timed


def find_stage(stages: list[Stage], name: str) -> Stage:
    """The stage a user named, as `--plan` prints it ("quantize onnx-int8"); dashes for
    spaces work too ("quantize-onnx-int8"), for CI matrices."""
    wanted = name.strip().replace(" ", "-")
    for stage in stages:
        if stage.name.replace(" ", "-") == wanted:
            return stage
    raise GemmaEdgeError(f"the build has no stage '{name}'",
                         "use a name from `gemma-edge build SPEC --plan`, e.g. "
                         f"'{stages[0].name}'" if stages else "check the spec")


def run_stage(spec: BuildSpec, name: str, *, store: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run one stage: its inputs come from the build dir or the store (they must exist
    there; nothing upstream runs implicitly), its output goes to the build dir and, with a
    store, into the store under its key. Up to date already: nothing runs."""
    from gemma_edge.stage_graph import plan

    stages = plan(spec)
    target = find_stage(stages, name)
    store = Path(store) if store is not None else None
    if store is not None and store.exists() and not store.is_dir():
        raise GemmaEdgeError(f"--store {store} is a file", "pass a directory (created if missing)")
    by_name = {s.name: s for s in stages}
    contents: dict[str, str] = {}
    keys: dict[str, str] = {}
    for need in _ancestors(target, by_name):  # in plan order, so each one's needs are known
        keys[need.name] = stage_key(need, contents)
        content = _fresh(need, keys[need.name]) or _from_store(need, keys[need.name], store)
        if content is None:
            raise GemmaEdgeError(
                f"stage '{target.name}' needs '{need.name}' (key {keys[need.name][:12]}), which is "
                f"neither in {spec.out} nor in {'the store ' + str(store) if store else 'a store'}",
                f"run `gemma-edge build SPEC --stage '{need.name}'"
                f"{' --store ' + str(store) if store else ''}` first, or pass --store")
        contents[need.name] = content
    key = keys[target.name] = stage_key(target, contents)
    content = _fresh(target, key) or _from_store(target, key, store)
    ran, wall, cpu = content is None, 0.0, 0.0
    if ran:
        spec.out.mkdir(parents=True, exist_ok=True)
        if target.child:
            t0 = time.time()
            cpu = ChildRun([target], keys, spec.source, progress=progress).join()
            wall = time.time() - t0
        else:
            wall, cpu = timed(lambda: run_stages([target], keys, spec.source, progress=progress))
        content = _fresh(target, key)
        if content is None:
            raise GemmaEdgeError(f"build stage {target.name} left no usable output "
                                 f"({output_state(target)[2]})")
    if store is not None:
        _publish(target, key, store, spec.source)
    result = {"stage": target.name, "key": key, "output": str(target.output), "ran": ran,
              "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
              "store": str(store / key) if store is not None else None}
    if target.action in REPORTS:
        report = json.loads((target.output / REPORTS[target.action]).read_text())
        result["passed"] = report.get("passed", True)
    return result


def _ancestors(target: Stage, by_name: dict[str, Stage]) -> list[Stage]:
    """Every stage the target reads, directly or not, in plan order."""
    seen: set[str] = set()
    todo = list(target.needs)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(by_name[name].needs)
    return [s for s in by_name.values() if s.name in seen]


def _fresh(stage: Stage, key: str) -> str | None:
    """The content hash of the stage's output in the build dir, if it verifies and was made
    with this key; else None."""
    content, recorded, _why = output_state(stage)
    return content if content is not None and recorded == key else None


def _from_store(stage: Stage, key: str, store: Path | None) -> str | None:
    """Copy the store's entry for `key` into the stage's output, verified; None if absent."""
    if store is None or not (store / key / "output").is_dir():
        return None
    entry = store / key / "output"
    probe = Stage(**{**stage.__dict__, "output": entry})
    content, recorded, why = output_state(probe)
    if content is None or recorded != key:
        raise GemmaEdgeError(
            f"store entry {store / key} for '{stage.name}' does not verify "
            f"({why or 'it records another key'})",
            "delete that entry and run its stage again")
    _copy_dir(entry, stage.output, skip_checks=stage.action not in REPORTS)
    return _fresh(stage, key)


def _publish(stage: Stage, key: str, store: Path, source: str) -> None:
    """Put the stage's output into the store under its key (atomically; an entry already
    there, made by another machine, is kept)."""
    final = store / key
    if (final / "output").is_dir():
        return
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{key}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _copy_dir(stage.output, tmp / "output", skip_checks=stage.action not in REPORTS)
        (tmp / "stage.json").write_text(json.dumps(
            {"stage": stage.name, "key": key, "source": source, "made": time.time()}, indent=2))
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "output").is_dir():  # not a concurrent writer's win: a real failure
            raise GemmaEdgeError(f"cannot write the store entry {final}: {exc.strerror or exc}",
                                 "check that --store is a writable directory") from None


def _copy_dir(src: Path, dst: Path, *, skip_checks: bool = False) -> None:
    """Copy an output directory (copies, not hard links: onnx refuses external data with
    several links, as a possible hard-link attack). An artifact's own check/ (another
    stage's output) is left out when copying the artifact; one already at `dst` stays (its
    own key decides whether it is current)."""
    from foundation.formats import CHECK_DIR

    ignore = shutil.ignore_patterns(CHECK_DIR) if skip_checks else None
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp, ignore=ignore)
    if dst.exists():
        kept = dst / CHECK_DIR
        if skip_checks and kept.is_dir():
            os.replace(kept, tmp / CHECK_DIR)
        shutil.rmtree(dst)
    os.replace(tmp, dst)
