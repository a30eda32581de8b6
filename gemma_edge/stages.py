"""A build is a graph of stages; this module is one stage: what it reads, what decides its
output, how it runs, and the one freshness rule every stage follows.

A stage's key is the sha256 of its inputs' content hashes (the files their manifests list),
its options and the versions of the tools that make it. The key is recorded in the
stage's output (manifest.json, or the check's report.json). A stage is up to date when its
output verifies against its own manifest and records the key computed now; anything else
(a changed option, input, tool version, or a tampered byte) makes it run again, and the
stages after it follow its new content hash.

Every stage runs the same way: `run_stages([...])`, a library call, either in this process
or, where memory demands it (converters keep GBs alive), in a child process running
`python -m gemma_edge.stages` on the stages' JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError
from foundation.formats import CHECK_REPORT, ENGINE_REPORT


@dataclass
class Stage:
    name: str  # "export onnx", "quantize onnx-int8", "check onnx-int8", "package onnx-int8"
    action: str  # export | quantize | check | package | engine (_ACTION below runs each)
    output: Path  # the directory it writes (a check: ARTIFACT/check)
    needs: tuple[str, ...] = ()  # stages whose outputs it reads
    options: dict[str, Any] = field(default_factory=dict)  # all else that decides the output
    tools: tuple[str, ...] = ()  # distributions whose versions decide the output
    child: bool = False  # run in a child process
    background: bool = False  # may run beside stages that do not need it (one-core converter)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "output": str(self.output), "needs": list(self.needs),
                "tools": list(self.tools)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        return cls(**{**data, "output": Path(data["output"]), "needs": tuple(data["needs"]),
                      "tools": tuple(data["tools"])})


# Options that say where something is, not what it is: its content is in the key already
# (an input stage's content hash, gates_sha256, text_sha256). Left out, the key is the same
# in every working copy, so machines of a CI matrix agree on it.
LOCATION_OPTIONS = ("export", "artifact", "gates", "text")
# stages whose output is a report in a check/ directory (of an artifact, of a package), by
# the report's file name; the rest make artifacts with manifests
REPORTS = {"check": CHECK_REPORT, "engine": ENGINE_REPORT}


def stage_key(stage: Stage, contents: dict[str, str]) -> str:
    """The content key: needs' content hashes + options + tool versions."""
    from foundation.artifacts import tool_versions

    options = {k: v for k, v in stage.options.items() if k not in LOCATION_OPTIONS}
    payload = {"stage": stage.name, "inputs": {n: contents[n] for n in stage.needs},
               "options": options, "tools": tool_versions(*stage.tools)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def output_state(stage: Stage) -> tuple[str | None, str | None, str]:
    """(content hash, recorded key, why not usable) of what the stage's output holds now."""
    from foundation.artifacts import tool_versions
    from foundation.integrity import content_hash, verify_artifact

    if not stage.output.exists():
        return None, None, "not made yet"
    try:
        if stage.action in REPORTS:
            data = (stage.output / REPORTS[stage.action]).read_bytes()
            report = json.loads(data)
            return hashlib.sha256(data).hexdigest(), report.get("build_key"), ""
        manifest = verify_artifact(stage.output, stages=(
            ("package",) if stage.action == "package" else ("export", "quantize")))
        recorded = manifest.get("tools") or {}
        if tool_versions(*recorded) != recorded:  # made by other versions than installed
            return content_hash(manifest), None, "made by other tool versions"
        return content_hash(manifest), manifest.get("build_key"), ""
    except GemmaEdgeError as exc:
        return None, None, exc.one_line()
    except (OSError, ValueError, AttributeError):
        return None, None, "unreadable"


def run_stages(stages: list[Stage], keys: dict[str, str], source: str, *, ref=None,
               progress: bool = True) -> None:
    """Run stages in this process, in order, with one model load for all of them."""
    from foundation.sources import load_source

    ref = ref or load_source(source)
    for stage in stages:
        _ACTION[stage.action](stage, {"build_key": keys[stage.name]}, ref, progress)


def _export(stage: Stage, record: dict, ref, progress: bool) -> None:
    from gemma_edge.api import export

    options = dict(stage.options)
    fmt = options.pop("format")
    options.pop("source_sha256", None)
    export(ref.spec, stage.output.parent, formats=[fmt], overwrite=True, ref=ref, record=record,
           **options)


def _quantize(stage: Stage, record: dict, ref, progress: bool) -> None:
    from quantization.quantize import quantize_export

    quantize_export(stage.options["export"], stage.output, stage.options["recipe"], ref=ref,
                    overwrite=True, progress=progress, record=record)


def _check(stage: Stage, record: dict, ref, progress: bool) -> None:
    from gemma_edge.api import check

    o = stage.options
    check(stage.output.parent, ref.spec, text=o["text"], max_tokens=o["max_tokens"],
          greedy_tokens=o["greedy_tokens"], gates=o["gates"], latency=o["latency"], ref=ref,
          record=record)


def _package(stage: Stage, record: dict, ref, progress: bool) -> None:
    from exporter.package import package

    package(stage.options["artifact"], stage.output, stage.options["kind"], overwrite=True,
            record=record)


def _engine(stage: Stage, record: dict, ref, progress: bool) -> None:
    from gemma_edge.api import check_package

    o = stage.options
    check_package(stage.output.parent, ref.spec, greedy_tokens=o["greedy_tokens"],
                  gates=o["gates"], latency=o["latency"], ref=ref, record=record)


_ACTION = {"export": _export, "quantize": _quantize, "check": _check, "package": _package,
           "engine": _engine}


class ChildRun:
    """Stages in a child process that runs while the build goes on; `join` waits for it,
    returns its CPU seconds and turns a failure into a one-line error."""

    def __init__(self, stages: list[Stage], keys: dict[str, str], source: str, *,
                 progress: bool) -> None:
        from foundation.interrupts import CHILD_ENV

        self.stages = stages
        self.names = ", ".join(s.name for s in stages)
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: never blocks
        job = json.dumps({"stages": [s.to_json() for s in stages], "keys": keys,
                          "source": source, "progress": progress})
        # interruptible even when this process ignores SIGINT (a shell's background job)
        # a fixed string-hash seed: torch.onnx's export walks sets of names (which of two
        # equal constants it keeps), so without it the same model gives other bytes per run
        env = {"PYTHONHASHSEED": "0", **os.environ, CHILD_ENV: "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gemma_edge.stages", job], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, text=True)

    def join(self) -> float:
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        self.stderr.close()
        if self.proc.returncode:
            last = (lines or ["no output"])[-1].removeprefix("gemma-edge: error: ")
            if "internal error" in last:  # a bug: the child's traceback is what gets reported
                print("\n".join(lines[-40:]), file=sys.stderr)
            raise GemmaEdgeError(f"build stage {self.names} failed: {last}")
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> None:
        """Interrupt the child with one SIGINT (foundation.interrupts makes sure it lands and
        that nothing is committed after it; a second one could cut its cleanup short), kill
        it after 60 s, then remove any partial directory it left."""
        import shutil
        import signal

        from foundation.artifacts import partial_dirs

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        for stage in self.stages:
            for partial in partial_dirs(stage.output):
                shutil.rmtree(partial, ignore_errors=True)


def _child_main(argv: list[str]) -> int:
    """`python -m gemma_edge.stages JOB_JSON`: the child side of ChildRun."""
    from gemma_edge.guard import run_guarded

    job = json.loads(argv[0])
    stages = [Stage.from_json(s) for s in job["stages"]]
    return run_guarded(lambda: run_stages(stages, job["keys"], job["source"],
                                          progress=job["progress"]), quiet=not job["progress"])


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of run()."""
    wall, cpu = time.time(), time.process_time()
    run()
    return time.time() - wall, time.process_time() - cpu


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
