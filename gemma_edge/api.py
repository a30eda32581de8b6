"""The Python API: export, quantize, check, package, build. The CLI calls these and only
parses and prints around them; a notebook or another tool can call them the same way.

Each returns plain data (manifests, check results); input errors raise GemmaEdgeError,
whose message names the problem and the fix. Stage modules are imported inside the
functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS, get_format, resolve

log = logging.getLogger("gemma_edge")


def export(source: str, out: str | Path, *, formats: Iterable[str] = ("onnx", "tflite"),
           overwrite: bool = False, variant: str | None = None, ref=None,
           record: dict | None = None, adapter: str | None = None,
           **options: Any) -> dict[str, dict[str, Any]]:
    """Export SOURCE's float decoder to OUT/<format>/ for each format; returns the manifests.
    `adapter`: a PEFT LoRA adapter dir merged into the weights first (foundation/adapters.py).

    options are format-specific (tflite: prefill_lengths, cache_length, head_block, rotate);
    each format receives only those its registry entry names."""
    from foundation.sources import load_source

    names = list(dict.fromkeys(f.strip() for f in formats if f.strip()))
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise GemmaEdgeError(f"unknown export format {','.join(unknown) or '(none)'}",
                             f"use one or more of: {', '.join(FORMATS)}")
    names.sort(key=list(FORMATS).index)  # lightest first: each peak RSS is its own export's
    if (options.get("head_block") or 0) < 0:
        raise GemmaEdgeError(f"--head-block must be 0 or positive, not {options['head_block']}",
                             "use 0 (one tensor) or a divisor of the hidden size, e.g. 128")
    if options.get("rotate") and options.get("head_block"):
        raise GemmaEdgeError("--rotate and --head-block do not combine",
                             "use one of them (--rotate is the more accurate)")
    if Path(out).exists() and not Path(out).is_dir():
        raise GemmaEdgeError(f"--out {out} is a file", "pass a directory (it is created if missing)")
    for fmt in names:  # refuse before the (slow) model load, not after it
        if (Path(out) / fmt).exists() and not overwrite:
            raise GemmaEdgeError(f"{Path(out) / fmt} already exists",
                                 "pass --overwrite or choose another --out")
    owned = ref is None
    ref = ref or load_source(source, variant=variant, adapter=adapter)
    manifests = {}
    for fmt in names:
        entry = FORMATS[fmt]
        ref.disposable = owned and fmt == names[-1]  # nothing reads the model after it
        own = {k: v for k, v in options.items() if k in entry.export_options and v is not None}
        exporter = ref.family.implementation(f"{fmt}.exporter", entry.exporter)
        manifests[fmt] = resolve(exporter)(ref, Path(out) / fmt, overwrite=overwrite,
                                                 record=record, **own)
    return manifests


def quantize_jobs(exports: str | Path | Sequence[str | Path], recipes: str | Iterable[str], *,
                  out: str | Path | None = None) -> list[tuple[Path, str, str, Path]]:
    """(export dir, format, recipe, output dir) per job, every name checked. A recipe
    written FORMAT=NAME applies to that format's export only."""
    from foundation.artifacts import require_manifest
    from quantization.recipes import get_recipe

    exports = [Path(e) for e in ([exports] if isinstance(exports, (str, Path)) else exports)]
    recipes = [recipes] if isinstance(recipes, str) else recipes
    manifests = [require_manifest(e, "export", "`gemma-edge export`") for e in exports]
    formats = [m.get("format", "?") for m in manifests]
    for export_dir, manifest in zip(exports, manifests, strict=True):
        if manifest.get("stage") == "quantize":
            raise GemmaEdgeError(f"{export_dir} is already quantized ({manifest.get('recipe')})",
                                 "quantize the fp32 export instead")
        if manifest.get("stage") != "export":
            raise GemmaEdgeError(f"{export_dir} is not a float export (it is a "
                                 f"{manifest.get('stage')} output)", "quantize an fp32 export")
    if len(exports) > 1 and out:
        raise GemmaEdgeError("--out takes one export directory", "leave --out away: outputs go "
                             "next to each export as <format>-<recipe>")
    if len({(m["inputs"]["source"], m["inputs"].get("source_sha256")) for m in manifests}) > 1:
        raise GemmaEdgeError("the export directories come from different models",
                             "quantize them one command at a time")
    jobs = []
    for token in (t.strip() for t in recipes if t.strip()):
        only, _, name = token.rpartition("=")
        if only and only not in formats:
            raise GemmaEdgeError(f"--recipe {token}: none of the exports is {only}",
                                 f"the exports are {', '.join(formats)}")
        jobs += [(e, f, name) for e, f in zip(exports, formats, strict=True) if only in ("", f)]
    if not jobs:
        raise GemmaEdgeError("no recipe given", "pass --recipe NAME[,NAME...]")
    result = []
    for export_dir, fmt, name in jobs:
        get_recipe(name, fmt)
        target = (Path(out) if out and len(jobs) == 1 else
                  (Path(out) if out else export_dir.parent) / f"{fmt}-{name}")
        result.append((export_dir, fmt, name, target))
    return result


def quantize(exports: str | Path | Sequence[str | Path], recipes: str | Iterable[str], *,
             out: str | Path | None = None, calibration: str | None = None,
             overwrite: bool = False, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Quantize fp32 exports of one model with each recipe; one model load and one
    calibration for all. Returns {output dir: manifest}."""
    from foundation.sources import load_source
    from quantization.quantize import quantize_export

    jobs = quantize_jobs(exports, recipes, out=out)
    for _e, _f, _n, target in jobs:  # refuse before the (slow) model load
        if target.exists() and not overwrite:
            raise GemmaEdgeError(f"{target} already exists", "pass --overwrite or choose another --out")
    from foundation.artifacts import read_manifest

    inputs = read_manifest(jobs[0][0])["inputs"]
    ref = load_source(inputs["source"], variant=inputs.get("variant"))
    # every job quantizes the same rotation (or none): it may rotate the model in place
    ref.disposable = len({json.dumps(read_manifest(e).get("graph", {}).get("rotation"),
                                     sort_keys=True) for e, _f, _n, _t in jobs}) == 1
    # the last job frees the weights once its codes are decided: the backend then writes
    # without the reference model beside it (a 4B's is 15.5 GB)
    return {str(target): quantize_export(export_dir, target, name, calibration=calibration,
                                         ref=ref, overwrite=overwrite, progress=progress,
                                         last_use=i == len(jobs) - 1)
            for i, (export_dir, _fmt, name, target) in enumerate(jobs)}


def check(artifact: str | Path, against: str, *, text: str | None = None, max_tokens: int = 512,
          greedy_tokens: int = 32, gates: str | None = None, threads: int | None = 2,
          latency: bool = True, ref=None, record: dict | None = None,
          adapter: str | None = None, images: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Verify ARTIFACT against the PyTorch reference; writes ARTIFACT/check/report.{json,html}
    and returns the result (result["passed"] says whether every gate passed). `record` is
    merged into the report (the build's freshness key). `images`: a vision artifact is
    checked on them (runtime_check/vision_check.py, docs/vision.md)."""
    from foundation.sources import load_source
    from foundation.texts import DEFAULT_EVAL_TEXT, load_text
    from runtime_check.check import check_artifact
    from runtime_check.gates import load_gates
    from runtime_check.report import write_check_report

    load_gates(gates)  # a broken gates file fails before the work, not after it
    if _is_package(artifact):
        for given, option in ((images, "--image"), (text, "--text")):
            if given:  # an engine runs the check prompts, not held-out text or images
                raise GemmaEdgeError(f"{option} checks an artifact, not a package",
                                     f"check the exported or quantized artifact with {option}, "
                                     "or the package without it")
        return check_package(artifact, against, greedy_tokens=greedy_tokens, gates=gates,
                             threads=threads, latency=latency, ref=ref, record=record,
                             adapter=adapter)
    body = load_text(text or DEFAULT_EVAL_TEXT)
    get_format(_format_of(artifact), f"artifact format in {artifact}")
    if images:  # a bad image fails before the (slow) model load
        from foundation.images import open_image

        for image in images:
            open_image(image)
    ref = ref or load_source(against, adapter=adapter)
    if images:
        from runtime_check.vision_check import check_vision_artifact

        result = check_vision_artifact(artifact, ref, list(images), text=body,
                                       greedy_tokens=greedy_tokens, gates_file=gates,
                                       threads=threads)
    else:
        result = check_artifact(artifact, ref, text=body, max_tokens=max_tokens,
                                greedy_tokens=greedy_tokens, gates_file=gates, threads=threads,
                                latency=latency)
    result.update(record or {})
    result["report"] = str(write_check_report(result, artifact) / "report.html")
    return result


def check_package(package: str | Path, against: str, *, greedy_tokens: int = 32,
                  gates: str | None = None, threads: int | None = 2, latency: bool = True,
                  ref=None, record: dict | None = None,
                  adapter: str | None = None) -> dict[str, Any]:
    """Run PACKAGE in its engine (LiteRT-LM, onnxruntime-genai): greedy on the check prompts
    against the reference up to its first near-tie, and the engine's own TTFT and tokens/s;
    writes PACKAGE/check/engine.json (runtime_check/engine_check.py)."""
    from foundation.integrity import verify_package
    from foundation.sources import load_source
    from runtime_check.engine_check import check_package as run_engine_check
    from runtime_check.engine_check import write_engine_report

    verify_package(package)  # a tampered package fails before the (slow) model load
    ref = ref or load_source(against, adapter=adapter)
    result = run_engine_check(package, ref, greedy_tokens=greedy_tokens, gates_file=gates,
                              threads=threads or 2, latency=latency)
    result.update(record or {})
    result["report"] = str(write_engine_report(result, package))
    return result


def _is_package(path: str | Path) -> bool:
    from foundation.artifacts import MANIFEST_NAME, read_manifest

    return (Path(path) / MANIFEST_NAME).is_file() and read_manifest(path).get("stage") == "package"


def package(artifact: str | Path, kind: str, *, out: str | Path | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Package ARTIFACT for an engine (kind: litertlm, onnx-bundle); returns its manifest.
    Default out: ARTIFACT.<kind> beside the artifact."""
    from exporter.package import package as make_package

    return make_package(artifact, package_target(artifact, kind, out), kind, overwrite=overwrite)


def package_target(artifact: str | Path, kind: str, out: str | Path | None = None) -> Path:
    artifact = Path(artifact)
    return Path(out) if out else artifact.parent / f"{artifact.name}.{kind}"


def build(spec: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run the build spec's stage graph (see gemma_edge.stage_graph); returns the summary."""
    from gemma_edge.build_spec import BuildSpec
    from gemma_edge.stage_graph import run_build

    return run_build(BuildSpec.load(spec), progress=progress)


def run(source: str, prompt: str | None, *, max_new_tokens: int = 64, chat: bool | None = None,
        variant: str | None = None, threads: int | None = None,
        on_piece: Callable[[str], None] | None = None, adapter: str | None = None,
        images: Sequence[str | Path] = (), policies: Sequence[str] = ()) -> dict[str, Any]:
    """Generate greedily from SOURCE (the PyTorch reference) or from a package directory (in
    its on-device engine); on_piece gets the text as it streams. Returns what was made.
    `images` (and ShieldGemma 2's `policies`): a vision-language source (docs/vision.md)."""
    if images or policies:
        return _run_vision(source, prompt, images, policies, max_new_tokens=max_new_tokens,
                           variant=variant, threads=threads, on_piece=on_piece)
    if (Path(source) / "manifest.json").is_file():
        if adapter is not None:
            raise GemmaEdgeError(f"{source} is a package: its weights are fixed",
                                 "pass --adapter with the base model, or export the adapted "
                                 "model and package that")
        return _run_package(source, prompt, max_new_tokens, chat, threads, on_piece)
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise GemmaEdgeError(f"{source} is neither a package (no manifest.json) nor a "
                             "checkpoint (no config.json)",
                             "pass a package written by gemma-edge package, or a checkpoint dir")
    from foundation.sources import load_source
    from runtime_check.generation import stream_text
    from runtime_check.torch_runner import TorchRunner

    ref = load_source(source, variant=variant, adapter=adapter)
    prompt_ids = ref.encode(prompt, chat=chat)
    context = getattr(ref.config, "max_position_embeddings", None)
    if context and len(prompt_ids) + max_new_tokens > context:
        raise GemmaEdgeError(f"{len(prompt_ids)} prompt tokens + {max_new_tokens} new tokens do "
                             f"not fit the model's context of {context}",
                             f"use --max-new-tokens {max(context - len(prompt_ids), 1)} or less")
    runner = TorchRunner(ref.model, threads=threads)
    started = time.perf_counter()
    first_token_at = None
    tokens, pieces = [], []
    for token, piece in stream_text(runner, ref.tokenizer, prompt_ids, max_new_tokens,
                                    ref.stop_token_ids):
        first_token_at = first_token_at or time.perf_counter()
        tokens.append(token)
        pieces.append(piece)
        if on_piece:
            on_piece(piece)
    ended = time.perf_counter()
    runner.close()
    decode_tps = (len(tokens) - 1) / (ended - first_token_at) if len(tokens) > 1 else None
    return {"source": source, "engine": runner.name, "prompt": prompt,
            "prompt_tokens": len(prompt_ids), "generated_tokens": tokens, "text": "".join(pieces),
            "stopped": bool(tokens) and tokens[-1] in ref.stop_token_ids,
            "ttft_seconds": round(first_token_at - started, 4),
            "decode_tokens_per_second": round(decode_tps, 2) if decode_tps else None}


def run_fim(source: str, prefix: str, suffix: str, *, max_new_tokens: int = 64,
            variant: str | None = None, threads: int | None = None,
            on_piece: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fill in the middle with a code model (CodeGemma): greedy from SOURCE after
    `<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>`, until a stop token
    (`<|file_separator|>` among them). Returns the infill and what was made."""
    from foundation.families import implementation
    from foundation.sources import load_source
    from runtime_check.generation import stream_text

    if (Path(source) / "manifest.json").is_file():
        raise GemmaEdgeError(f"{source} is a package: fill-in-the-middle runs from a model source",
                             "pass the CodeGemma checkpoint directory")
    ref = load_source(source, variant=variant)
    fim = ref.family.fim
    vocab = ref.tokenizer.get_vocab()
    missing = [t for t in (fim.get("prefix"), fim.get("suffix"), fim.get("middle"))
               if t not in vocab] if fim else ["<|fim_prefix|>"]
    if missing:
        raise GemmaEdgeError(f"{source}'s tokenizer has no {missing[0]} token: it is not a "
                             "code model with fill-in-the-middle",
                             "use a CodeGemma checkpoint (or drop --fim-prefix/--fim-suffix)")
    prompt_ids = ref.encode(f"{fim['prefix']}{prefix}{fim['suffix']}{suffix}{fim['middle']}",
                            chat=False)
    runner = resolve(implementation(ref.family.name, "torch.runner",
                                    "runtime_check.torch_runner:TorchRunner"))(ref.model, threads=threads)
    tokens, pieces = [], []
    for token, piece in stream_text(runner, ref.tokenizer, prompt_ids, max_new_tokens,
                                    ref.stop_token_ids):
        tokens.append(token)
        pieces.append(piece)
        if on_piece:
            on_piece(piece)
    runner.close()
    return {"source": source, "engine": runner.name, "prefix": prefix, "suffix": suffix,
            "prompt_ids": prompt_ids, "generated_tokens": tokens, "infill": "".join(pieces),
            "stopped": bool(tokens) and tokens[-1] in ref.stop_token_ids}


def _run_vision(source, prompt, images, policies, **options) -> dict[str, Any]:
    from foundation.images import open_image
    from foundation.sources import load_source
    from runtime_check.vision_run import run_vision

    if not images:
        raise GemmaEdgeError("--policy needs an image", "pass --image FILE")
    for image in images:  # a bad image fails before the (slow) model load
        open_image(image)
    if (Path(source) / "manifest.json").is_file():  # an export or package (docs/vision.md)
        from runtime_check.vision_engine import run_vision_artifact

        return run_vision_artifact(source, images, prompt, policies, **options)
    ref = load_source(source, variant=options.pop("variant"))
    return run_vision(ref, list(images), prompt, policies=list(policies), **options)


def _run_package(package_dir, prompt, max_new_tokens, chat, threads, on_piece) -> dict[str, Any]:
    from foundation.chat import format_chat
    from runtime_check.engines import open_engine, package_context

    engine = open_engine(package_dir, threads=threads or 2)
    if chat is None:
        chat = engine.manifest["inputs"].get("variant") == "it"
    room = package_context(package_dir, engine.manifest)
    text = format_chat([{"role": "user", "content": prompt}], bos_token="") if chat else prompt
    used = len(engine.tokenize(text)) + 1  # + BOS
    if used + max_new_tokens > room:
        engine.close()
        raise GemmaEdgeError(f"{used} prompt tokens + {max_new_tokens} new tokens do not fit the "
                             f"package's context of {room}",
                             f"use --max-new-tokens {max(room - used, 1)} or less")
    pieces = []
    try:
        for piece in engine.generate(prompt, max_new_tokens, chat=chat):
            pieces.append(piece)
            if on_piece:
                on_piece(piece)
    finally:
        engine.close()
    return {"engine": engine.name, "prompt": prompt, "text": "".join(pieces)}


def _format_of(artifact: str | Path) -> str | None:
    from foundation.integrity import verify_artifact

    return verify_artifact(artifact).get("format")
