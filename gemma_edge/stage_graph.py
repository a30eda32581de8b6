"""`gemma-edge build SPEC.toml`: the spec as a stage graph, then a loop over it.

plan(spec) lists the stages (export per format -> quantize per recipe -> check per
artifact -> package per artifact), each with what it needs and what decides its output
(gemma_edge.stages has the one freshness rule). run_build walks the plan in order, skips
what is up to date, and runs the rest the same way every time: export and quantize in
child processes (converters keep GBs alive; stale recipes of one format batch into one
child: one model load, one calibration), check and package in this process. LiteRT's
conversion keeps one core busy for minutes, so when another format is built too it runs
in the background beside that format's stages. Checks run after all of that, one at a
time, since they time the artifacts. Gates are evaluated by every check; the build
finishes all stages and the report, and the summary says whether every gate passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError
from foundation.formats import CHECK_DIR, FORMATS, PACKAGE_KINDS
from gemma_edge.build_spec import BuildSpec
from gemma_edge.stages import REPORTS, ChildRun, Stage, output_state, run_stages, stage_key, timed

log = logging.getLogger("gemma_edge")


def plan(spec: BuildSpec) -> list[Stage]:
    """The stages in the order they run (every stage after the stages it needs)."""
    from foundation.sources import source_identity
    from quantization.recipes import RECIPES

    source_sha = source_identity(spec.source)
    background = "tflite" in spec.formats and len(spec.formats) > 1
    order = sorted(spec.formats, key=lambda f: background and f == "tflite")
    exports, quantizes, artifacts = [], [], []  # artifacts: (name, producing stage)
    for fmt in order:
        entry = FORMATS[fmt]
        options = {"format": fmt, "source_sha256": source_sha}
        if fmt == "tflite":
            options |= {"head_block": spec.head_block, "rotate": spec.rotate}
        if fmt == "onnx" and spec.onnx_rotate is not None:
            options |= {"rotate": spec.onnx_rotate}
        exports.append(Stage(f"export {fmt}", "export", spec.out / fmt, (), options,
                             ("torch", "transformers", *entry.export_tools),
                             child=True, background=background and fmt == "tflite"))
        artifacts.append((fmt, exports[-1]))
        for recipe in spec.recipes.get(fmt, []):
            if fmt in RECIPES[recipe].refused:
                log.info("[build] %s is not offered for %s (%s)", recipe, fmt,
                         RECIPES[recipe].refused[fmt])
                continue
            name = f"{fmt}-{recipe}"
            quantizes.append(Stage(f"quantize {name}", "quantize", spec.out / name,
                                   (f"export {fmt}",),
                                   {"recipe": recipe, "export": str(spec.out / fmt)},
                                   ("torch", "transformers", *entry.tools), child=True))
            artifacts.append((name, quantizes[-1]))
    # exports first (a background one starts at once), then the recipes in format order
    stages = [*exports, *quantizes]
    check_options = spec.check_options()
    check_options |= {"text_sha256": _text_sha(check_options["text"]),
                      "gates_sha256": _file_sha(spec.gates)}
    checks = {name: Stage(f"check {name}", "check", producer.output / CHECK_DIR,
                          (producer.name,), check_options, _check_tools(name.split("-")[0]))
              for name, producer in artifacts}
    stages += list(checks.values())
    engines = []  # after every package: like checks, they time what they run
    if spec.package:
        for name, producer in artifacts:
            fmt = FORMATS[name.split("-")[0]]
            target = spec.out / "packages" / f"{name}.{fmt.package}"
            stages.append(Stage(f"package {name}", "package", target,
                                (producer.name, checks[name].name),
                                {"kind": fmt.package, "artifact": str(producer.output)},
                                PACKAGE_KINDS[fmt.package].tools))
            if spec.engines:  # the package in the engine an app runs it in
                engine_options = {k: check_options[k] for k in (
                    "greedy_tokens", "latency", "gates", "gates_sha256")}
                engines.append(Stage(f"engine {name}", "engine", target / CHECK_DIR,
                                     (f"package {name}",), engine_options,
                                     ("torch", "transformers", *PACKAGE_KINDS[fmt.package].tools)))
    return stages + engines


def _check_tools(fmt: str) -> tuple[str, ...]:
    return ("torch", "transformers", *FORMATS[fmt].tools)


def _text_sha(text: str) -> str:
    from foundation.texts import load_text

    return hashlib.sha256(load_text(text).encode()).hexdigest()


def _file_sha(path: str | None) -> str | None:
    from foundation.artifacts import sha256_file

    if path is None:
        return None
    if not Path(path).is_file():
        raise GemmaEdgeError(f"gates file '{path}' does not exist",
                             "pass a JSON file like runtime_check/gates/default.json")
    return sha256_file(path)


def describe_plan(spec: BuildSpec) -> dict[str, Any]:
    """The graph without running it: stages, dependencies, content keys where known now
    (a stage after a stale one gets its key only when that one has run)."""
    stages, contents, stale = plan(spec), {}, set()
    rows, level = [], {}
    for stage in stages:
        # a CI matrix runs each level's stages side by side, after the levels before it
        level[stage.name] = 1 + max((level[n] for n in stage.needs), default=-1)
        content, recorded, why = output_state(stage)
        known = all(n in contents for n in stage.needs)
        key = stage_key(stage, contents) if known else None
        fresh = known and not stale & set(stage.needs) and key == recorded and content is not None
        if fresh:
            contents[stage.name] = content
        else:
            stale.add(stage.name)
        rows.append({**stage.to_json(), "level": level[stage.name], "key": key, "fresh": fresh,
                     "reason": "up to date" if fresh else _reason(stage, stale, known, recorded,
                                                                 key, why)})
    return {"source": spec.source, "out": str(spec.out), "stages": rows}


def _reason(stage: Stage, stale: set, known: bool, recorded, key, why: str) -> str:
    if not known or stale & set(stage.needs):
        return "after " + ", ".join(n for n in stage.needs if n in stale)
    if why:
        return why
    return "made with other inputs, options or tools" if recorded else "no build key recorded"


def run_build(spec: BuildSpec, *, progress: bool = True) -> dict[str, Any]:
    from runtime_check.report import build_report

    started = time.time()
    stages = plan(spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    contents: dict[str, str] = {}
    keys: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}  # the reference model, loaded when an in-process stage needs it

    def up_to_date(stage: Stage) -> bool:
        keys[stage.name] = stage_key(stage, contents)
        content, recorded, _why = output_state(stage)
        if content is not None and recorded == keys[stage.name]:
            contents[stage.name] = content
            rows.append({"stage": stage.name, "target": str(stage.output), "skipped": True})
            log.info("[build] %s: %s is up to date, skipped", stage.name, stage.output)
            return True
        return False

    def finished(batch: list[Stage], wall: float, cpu: float, **extra) -> None:
        for stage in batch:
            content, _recorded, why = output_state(stage)
            if content is None:
                raise GemmaEdgeError(f"build stage {stage.name} left no usable output ({why})")
            contents[stage.name] = content
        rows.append({"stage": ", ".join(s.name for s in batch), "target": str(batch[0].output),
                     "skipped": False, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                     **extra})

    background: dict[str, tuple[ChildRun, float]] = {}

    def join(names) -> None:
        for name in [n for n in names if n in background]:
            child, t0 = background.pop(name)
            cpu = child.join()
            finished(child.stages, time.time() - t0, cpu, background=True)

    try:
        for stage in stages:  # a background stage starts before everything else
            if stage.background and not up_to_date(stage):
                log.info("[build] %s -> %s (in the background)", stage.name, stage.output)
                background[stage.name] = (ChildRun([stage], keys, spec.source,
                                                   progress=progress), time.time())
        pending = [s for s in stages if s.name not in contents and s.name not in background]
        while pending:
            stage = pending.pop(0)
            # a check (of an artifact, of a package in its engine) times it: nothing beside it
            join(list(background) if stage.action in REPORTS else stage.needs)
            if up_to_date(stage):
                continue
            batch = [stage]
            while stage.child and pending and pending[0].action == stage.action \
                    and all(n in contents for n in pending[0].needs):
                nxt = pending.pop(0)
                if not up_to_date(nxt):
                    batch.append(nxt)
            log.info("[build] %s", ", ".join(f"{s.name} -> {s.output}" for s in batch))
            if stage.child:
                t0 = time.time()
                cpu = ChildRun(batch, keys, spec.source, progress=progress).join()
                finished(batch, time.time() - t0, cpu)
            else:
                wall, cpu = timed(lambda b=batch: run_stages(
                    b, keys, spec.source, ref=_reference(holder, spec.source), progress=progress))
                finished(batch, wall, cpu)
    except BaseException:
        for child, _t0 in background.values():
            child.stop()
        raise

    html, report = build_report(spec.out)
    summary = {"report": str(html), "passed": report["passed"], "stages": rows,
               "packages": [str(s.output) for s in stages if s.action == "package"],
               "seconds": round(time.time() - started, 1),
               "artifacts": [{"name": r["name"], "passed": r["passed"]}
                             for r in report["artifacts"]],
               "engines": [{"name": r["name"], "engine": r["engine"], "passed": r["passed"]}
                           for r in report["packages"]]}
    (spec.out / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "report_data": report}


def _reference(holder: dict, source: str):
    """The reference model, loaded once for every in-process stage of the build."""
    if "ref" not in holder:
        from foundation.sources import load_source

        holder["ref"] = load_source(source)
    return holder["ref"]
