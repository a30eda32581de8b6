"""`gemma-edge build SPEC.toml`: export -> quantize -> check -> package -> report, for CI.

Each stage writes a manifest that names the hashes of its inputs; a stage is skipped when
its output exists and those hashes (and its options) still match, so a second run after
changing one recipe redoes only that recipe's artifacts. Gates are evaluated by every
check; the build finishes all stages and the report, then exits 3 if any gate failed.

Spec (TOML):
    source   = "builtin:gemma3-270m"
    out      = "build"
    formats  = ["onnx", "tflite"]
    recipes  = ["int8-calibrated", "int4-calibrated"]   # every format, where offered
    # or per format:  [recipes]  onnx = ["int8-calibrated"]  tflite = ["int8-dynamic"]
    gates    = "my-gates.json"                          # optional
    package  = true                                      # .litertlm / ONNX bundle per artifact
    [export]
    tflite_head_block = 64   # optional: LiteRT LM head in column parts (export --head-block)
    tflite_rotate = false    # optional: LiteRT weights unrotated (default: rotated unless
                             # tflite_head_block is set; export --rotate)
    [check]
    text = "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1"
    max_tokens = 512
    latency = true
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_edge.errors import GateFailedError, GemmaEdgeError

log = logging.getLogger("gemma_edge")

KIND = {"tflite": "litertlm", "onnx": "onnx-bundle"}


@dataclass
class BuildSpec:
    source: str
    out: Path
    formats: list[str]
    recipes: dict[str, list[str]]  # format -> recipes
    gates: str | None = None
    package: bool = True
    check: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    @property
    def head_block(self) -> int:
        return int(self.export.get("tflite_head_block", 0))

    @property
    def rotate(self) -> bool:
        value = self.export.get("tflite_rotate")
        return not self.head_block if value is None else bool(value)

    @classmethod
    def load(cls, path: str | Path) -> BuildSpec:
        import tomllib

        path = Path(path)
        if not path.is_file():
            raise GemmaEdgeError(f"build spec {path} does not exist", "pass a gemma-edge.toml file")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise GemmaEdgeError(f"build spec {path} is not valid TOML ({exc})") from None
        unknown = set(data) - {"source", "out", "formats", "recipes", "gates", "package", "check",
                               "export"}
        if unknown:
            raise GemmaEdgeError(f"build spec {path} has unknown keys: {', '.join(sorted(unknown))}",
                                 "use source, out, formats, recipes, gates, package, [export], [check]")
        if "source" not in data:
            raise GemmaEdgeError(f"build spec {path} has no source", 'add source = "builtin:gemma3-270m"')
        base = path.parent
        formats = list(data.get("formats", ["onnx", "tflite"]))
        spec = cls(source=data["source"], out=base / data.get("out", "build"), formats=formats,
                   recipes=_recipes_by_format(data.get("recipes", []), formats),
                   gates=str(base / data["gates"]) if data.get("gates") else None,
                   package=bool(data.get("package", True)), check=dict(data.get("check", {})),
                   export=dict(data.get("export", {})))
        spec.validate()
        return spec

    def validate(self) -> None:
        from quantization.recipes import RECIPES

        bad = [f for f in self.formats if f not in KIND]
        if bad or not self.formats:
            raise GemmaEdgeError(f"build spec: unknown format {bad or '(none)'}", "use onnx and/or tflite")
        unknown = [r for names in self.recipes.values() for r in names if r not in RECIPES]
        if set(self.recipes) - set(self.formats):
            raise GemmaEdgeError(f"build spec: recipes for {sorted(set(self.recipes) - set(self.formats))} "
                                 "but formats are " + ", ".join(self.formats),
                                 "name only formats the spec builds under [recipes]")
        if unknown:
            raise GemmaEdgeError(f"build spec: unknown recipe {unknown[0]}",
                                 f"use any of: {', '.join(RECIPES)}")
        extra = set(self.export) - {"tflite_head_block", "tflite_rotate"}
        if extra:
            raise GemmaEdgeError(f"build spec: unknown [export] keys {', '.join(sorted(extra))}",
                                 "use tflite_head_block, tflite_rotate")
        block = self.export.get("tflite_head_block", 0)
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise GemmaEdgeError("build spec: [export] tflite_head_block must be an integer >= 0, "
                                 f"not {block!r}", "e.g. tflite_head_block = 64, or leave it out")
        if not isinstance(self.export.get("tflite_rotate", False), bool):
            raise GemmaEdgeError("build spec: [export] tflite_rotate must be true or false, "
                                 f"not {self.export['tflite_rotate']!r}", "e.g. tflite_rotate = true")
        if self.rotate and self.head_block:
            raise GemmaEdgeError("build spec: [export] tflite_rotate and tflite_head_block do not "
                                 "combine", "use one of them (tflite_rotate is the more accurate)")
        extra = set(self.check) - {"text", "max_tokens", "latency", "greedy_tokens"}
        if extra:
            raise GemmaEdgeError(f"build spec: unknown [check] keys {', '.join(sorted(extra))}",
                                 "use text, max_tokens, greedy_tokens, latency")


def _recipes_by_format(value: Any, formats: list[str]) -> dict[str, list[str]]:
    """`recipes` is a list (every format, where offered) or a table of lists per format."""
    if isinstance(value, dict):
        if not all(isinstance(v, list) for v in value.values()):
            raise GemmaEdgeError("build spec: [recipes] values must be lists of recipe names",
                                 'e.g. onnx = ["int8-calibrated"]')
        return {fmt: [str(r) for r in names] for fmt, names in value.items()}
    if not isinstance(value, list):
        raise GemmaEdgeError("build spec: recipes must be a list or a table per format",
                             'e.g. recipes = ["int8-calibrated", "int4-calibrated"]')
    return {fmt: [str(r) for r in value] for fmt in formats}


def _manifest(path: Path) -> dict | None:
    file = path / "manifest.json"
    return json.loads(file.read_text()) if file.is_file() else None


def _model_sha(manifest: dict) -> str:
    return manifest["files"][manifest["model_file"]]["sha256"]


def _same_tools(manifest: dict) -> bool:
    """True when the tools that made an artifact (its manifest's `tools`: gemma-edge, torch,
    the converter or quantizer) are the installed versions: after an upgrade a stage is
    made again, and the stages after it follow its output's hash."""
    from gemma_edge.artifacts import tool_versions

    recorded = manifest.get("tools") or {}
    return tool_versions(*recorded) == recorded


def _child(*argv: str) -> None:
    """Run one CLI stage in its own process: converters keep GBs alive after they finish
    (litert-torch), and a build that exported in-process ran out of memory at its checks."""
    _Background(*argv).join()


class _Background:
    """One CLI stage in a child process that runs while the build goes on; `join` waits
    for it and turns a failure into a one-line error (the child's last stderr line)."""

    def __init__(self, *argv: str, output: Path | None = None) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        from gemma_edge.interrupts import CHILD_ENV

        self.argv, self.output = argv, output
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: never blocks the child
        # interruptible even when this process ignores SIGINT (a shell's background job)
        env = {**os.environ, CHILD_ENV: "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gemma_edge", *argv], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, text=True)

    def join(self) -> None:
        code = self.proc.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        self.stderr.close()
        if code:
            raise GemmaEdgeError(f"build stage `gemma-edge {self.argv[0]}` failed: "
                                 f"{(lines or ['no output'])[-1]}")

    def stop(self) -> None:
        """Interrupt the child with one SIGINT (the child's gemma_edge.interrupts makes sure
        it lands and that nothing is committed after it; a second one could cut its cleanup
        short), kill it after 60 s, then remove any partial directory it left for `output`."""
        import shutil
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        if self.output is not None:
            from gemma_edge.artifacts import partial_dirs

            for partial in partial_dirs(self.output):
                shutil.rmtree(partial, ignore_errors=True)


def run_build(spec: BuildSpec, *, progress: bool = True) -> dict[str, Any]:
    from gemma_edge.sources import load_source
    from quantization.recipes import RECIPES

    started = time.time()
    spec.out.mkdir(parents=True, exist_ok=True)
    ref_holder: dict = {}
    stages: list[dict[str, Any]] = []

    def ref():
        if "ref" not in ref_holder:
            ref_holder["ref"] = load_source(spec.source)
        return ref_holder["ref"]

    def stage(name: str, target: Path, fresh: bool, action) -> None:
        t0 = time.time()
        if fresh:
            log.info("[build] %s: %s is up to date, skipped", name, target)
            stages.append({"stage": name, "target": str(target), "skipped": True})
            return
        log.info("[build] %s -> %s", name, target)
        action()
        stages.append({"stage": name, "target": str(target), "skipped": False,
                       "seconds": round(time.time() - t0, 1)})

    source_sha = ref().sha256  # cached sources load in seconds; checks need the model anyway

    def export_argv(fmt: str) -> tuple[Path, bool, tuple[str, ...]]:
        target = spec.out / fmt
        current = _manifest(target)
        options = ["--head-block", str(spec.head_block),
                   "--rotate" if spec.rotate else "--no-rotate"] if fmt == "tflite" else []
        fresh = bool(current) and current["inputs"].get("source_sha256") == source_sha \
            and _same_tools(current) and (
            fmt != "tflite" or (current["graph"].get("head_block", 0) == spec.head_block
                                and bool(current["graph"].get("rotation")) == spec.rotate))
        return target, fresh, ("export", spec.source, "--format", fmt, "--out", str(spec.out),
                               "--overwrite", *options)

    def export(fmt: str) -> None:
        target, fresh, argv = export_argv(fmt)
        stage(f"export {fmt}", target, fresh, lambda: _child(*argv))

    artifacts: dict[str, list[Path]] = {}  # format -> its export and quantized artifacts

    def quantize(formats: list[str]) -> None:
        """Every stale recipe of these (exported) formats in one process: one model load,
        calibration collected once."""
        stale: list[tuple[str, str]] = []  # (format, recipe) to quantize
        for fmt in formats:
            artifacts[fmt] = [spec.out / fmt]
            export_sha = _model_sha(_manifest(spec.out / fmt))
            for recipe in spec.recipes.get(fmt, []):
                if fmt in RECIPES[recipe].refused:
                    log.info("[build] %s is not offered for %s (%s)", recipe, fmt,
                             RECIPES[recipe].refused[fmt])
                    continue
                qtarget = spec.out / f"{fmt}-{recipe}"
                current = _manifest(qtarget)
                fresh = bool(current) and current["inputs"].get("export_sha256") == export_sha \
                    and current.get("recipe") == recipe and _same_tools(current)
                if fresh:
                    stage(f"quantize {fmt}-{recipe}", qtarget, True, None)
                else:
                    stale.append((fmt, recipe))
                artifacts[fmt].append(qtarget)
        if not stale:
            return
        names = [f"{fmt}-{recipe}" for fmt, recipe in stale]
        target = spec.out / (names[0] if len(names) == 1 else "{" + ",".join(names) + "}")
        exports = [str(spec.out / f) for f in formats if f in {fmt for fmt, _r in stale}]
        stage(f"quantize {', '.join(names)}", target, False, lambda: _child(
            "quantize", *exports, "--recipe", ",".join(f"{fmt}={recipe}" for fmt, recipe in stale),
            "--overwrite", *([] if progress else ["-q"])))

    # LiteRT's conversion runs on one core (torch.export and MLIR lowering in Python: 101 %
    # CPU for 3 min on the 270M), so when it has to run it runs in the background while the
    # other formats export and quantize on the second core; then LiteRT's recipes quantize.
    # (Checks run after all of that, one at a time: they time the artifacts.)
    background, started_bg = None, 0.0
    if "tflite" in spec.formats and len(spec.formats) > 1:
        target, fresh, argv = export_argv("tflite")
        if not fresh:
            log.info("[build] export tflite -> %s (in the background)", target)
            background, started_bg = _Background(*argv, output=target), time.time()
    try:
        ahead = [f for f in spec.formats if not (background and f == "tflite")]
        for fmt in ahead:
            export(fmt)
        quantize(ahead)
    except BaseException:
        if background:
            background.stop()
        raise
    if background:
        background.join()
        stages.append({"stage": "export tflite", "target": str(target), "skipped": False,
                       "seconds": round(time.time() - started_bg, 1), "background": True})
        quantize(["tflite"])
    artifacts_in_order = [a for fmt in spec.formats for a in artifacts[fmt]]

    results = []
    for artifact in artifacts_in_order:
        report = artifact / "check" / "report.json"
        model_sha = _model_sha(_manifest(artifact))
        previous = json.loads(report.read_text()) if report.is_file() else None
        options = {"text": spec.check.get("text"), "max_tokens": spec.check.get("max_tokens", 512),
                   "latency": spec.check.get("latency", True), "gates": spec.gates}
        fresh = bool(previous) and previous.get("artifact_sha256") == model_sha \
            and previous.get("build_options") == options

        def check(artifact=artifact, model_sha=model_sha, options=options):
            from gemma_edge.cli import DEFAULT_EVAL_TEXT
            from gemma_edge.texts import load_text
            from runtime_check.check import check_artifact
            from runtime_check.report import write_check_report

            result = check_artifact(artifact, ref(), text=load_text(options["text"] or DEFAULT_EVAL_TEXT),
                                    max_tokens=options["max_tokens"],
                                    greedy_tokens=spec.check.get("greedy_tokens", 32),
                                    gates_file=spec.gates, latency=options["latency"])
            result["artifact_sha256"] = model_sha
            result["build_options"] = options
            write_check_report(result, artifact)

        stage(f"check {artifact.name}", artifact / "check", fresh, check)
        results.append(json.loads(report.read_text()))

    packages = []
    if spec.package:
        from exporter.package import package

        for artifact in artifacts_in_order:
            manifest = _manifest(artifact)
            kind = KIND[manifest["format"]]
            target = spec.out / "packages" / f"{artifact.name}.{kind}"
            current = _manifest(target)
            check_sha = json.loads((artifact / "check" / "report.json").read_text())["artifact_sha256"]
            fresh = bool(current) and current["inputs"].get("artifact_sha256") == _model_sha(manifest) \
                and check_sha == _model_sha(manifest) and current.get("check") is not None \
                and _same_tools(current)
            stage(f"package {artifact.name}", target, fresh,
                  lambda artifact=artifact, target=target, kind=kind: package(
                      artifact, target, kind, overwrite=True))
            packages.append(str(target))

    from runtime_check.report import build_report

    html, report = build_report(spec.out)
    summary = {"report": str(html), "passed": report["passed"], "stages": stages,
               "packages": packages, "seconds": round(time.time() - started, 1),
               "artifacts": [{"name": r["name"], "passed": r["passed"]} for r in results]}
    (spec.out / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "report_data": report}


def build_command(path: str, *, progress: bool = True) -> dict[str, Any]:
    spec = BuildSpec.load(path)
    summary = run_build(spec, progress=progress)
    if not summary["passed"]:
        failed = [a["name"] for a in summary["artifacts"] if not a["passed"]]
        summary["error"] = GateFailedError(f"gates failed for {', '.join(failed)}",
                                           f"see {summary['report']}")
    return summary
