"""The `gemma-edge` command. Stage modules are imported inside the commands, so
`gemma-edge --help` starts without torch (a test holds that)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

from gemma_edge import __version__, interrupts
from gemma_edge.errors import EXIT_BUG, EXIT_GATE, EXIT_OK, EXIT_USAGE, GemmaEdgeError

log = logging.getLogger("gemma_edge")

SOURCE_HELP = ("model: a Hugging Face checkpoint dir, a .gguf file, builtin:gemma3-270m, "
               "or tiny:<family>")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"gemma-edge: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _cmd_info(args: argparse.Namespace) -> int:
    from gemma_edge.sources import load_source
    from gemma_edge.summary import describe, format_summary

    info = describe(load_source(args.source, variant=args.variant))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if (Path(args.source) / "manifest.json").is_file():  # a package: run it in its engine
        return _cmd_run_package(args)
    from gemma_edge.sources import load_source
    from runtime_check.generation import stream_text
    from runtime_check.torch_runner import TorchRunner

    if args.max_new_tokens < 1:
        raise GemmaEdgeError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    ref = load_source(args.source, variant=args.variant)
    chat = {"auto": None, "on": True, "off": False}[args.chat]
    prompt_ids = ref.encode(args.prompt, chat=chat)
    runner = TorchRunner(ref.model, threads=args.threads)
    started = time.perf_counter()
    first_token_at = None
    tokens, pieces = [], []
    for token, piece in stream_text(runner, ref.tokenizer, prompt_ids, args.max_new_tokens,
                                    ref.stop_token_ids):
        if first_token_at is None:
            first_token_at = time.perf_counter()
        tokens.append(token)
        pieces.append(piece)
        if not args.json:
            print(piece, end="", flush=True)
    ended = time.perf_counter()
    runner.close()
    decode_tps = (len(tokens) - 1) / (ended - first_token_at) if len(tokens) > 1 else None
    result = {
        "source": args.source,
        "engine": runner.name,
        "prompt": args.prompt,
        "prompt_tokens": len(prompt_ids),
        "generated_tokens": tokens,
        "text": "".join(pieces),
        "stopped": bool(tokens) and tokens[-1] in ref.stop_token_ids,
        "ttft_seconds": round(first_token_at - started, 4),
        "decode_tokens_per_second": round(decode_tps, 2) if decode_tps else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        log.info("[%d prompt tokens, %d generated; TTFT %.0f ms, decode %s tok/s]",
                 len(prompt_ids), len(tokens), 1000 * result["ttft_seconds"],
                 result["decode_tokens_per_second"])
    return EXIT_OK


# format -> (module, function); imported only when that format is asked for. Exports run
# in this order, lightest first, so each manifest's process peak RSS is its own export's.
EXPORTERS = {"onnx": ("exporter.onnx_export", "export_onnx"),
             "tflite": ("exporter.tflite_export", "export_tflite")}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _cmd_export(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    from gemma_edge.sources import load_source

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown or not formats:
        raise GemmaEdgeError(f"unknown export format {','.join(unknown) or '(none)'}",
                             f"use one or more of: {', '.join(EXPORTERS)}")
    formats = sorted(set(formats), key=list(EXPORTERS).index)
    if args.head_block < 0:
        raise GemmaEdgeError(f"--head-block must be 0 or positive, not {args.head_block}",
                             "use 0 (one tensor) or a divisor of the hidden size, e.g. 128")
    if args.rotate and args.head_block:
        raise GemmaEdgeError("--rotate and --head-block do not combine",
                             "use one of them (--rotate is the more accurate)")
    for fmt in formats:  # refuse before the (slow) model load, not after it
        if (Path(args.out) / fmt).exists() and not args.overwrite:
            raise GemmaEdgeError(f"{Path(args.out) / fmt} already exists",
                                 "pass --overwrite or choose another --out")
    ref = load_source(args.source, variant=args.variant)
    results = {}
    for fmt in formats:
        module, func = EXPORTERS[fmt]
        exporter = getattr(importlib.import_module(module), func)
        options = ({"prefill_lengths": args.prefill_lengths, "cache_length": args.cache_length,
                    "head_block": args.head_block, "rotate": args.rotate} if fmt == "tflite" else {})
        manifest = exporter(ref, Path(args.out) / fmt, overwrite=args.overwrite, **options)
        size = sum(f["bytes"] for f in manifest["files"].values())
        results[fmt] = {"dir": str(Path(args.out) / fmt), "bytes": size,
                        "wall_seconds": manifest["wall_seconds"],
                        "peak_rss_bytes": manifest["peak_rss_bytes"]}
        if not args.json:
            print(f"{fmt}: {Path(args.out) / fmt}  {size / 2**20:.1f} MiB, "
                  f"{manifest['wall_seconds']:.1f} s, process peak RSS "
                  f"{manifest['peak_rss_bytes'] / 2**30:.2f} GiB")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_OK


def _cmd_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gemma_edge.artifacts import require_manifest
    from gemma_edge.sources import load_source
    from quantization.quantize import quantize_export
    from quantization.recipes import get_recipe

    exports = [Path(d) for d in args.export_dir]
    manifests = [require_manifest(e, "export", "`gemma-edge export`") for e in exports]
    formats = [m.get("format", "?") for m in manifests]
    if len(exports) > 1 and args.out:
        raise GemmaEdgeError("--out takes one export directory", "leave --out away: outputs go "
                             "next to each export as <format>-<recipe>")
    if len({(m["inputs"]["source"], m["inputs"].get("source_sha256")) for m in manifests}) > 1:
        raise GemmaEdgeError("the export directories come from different models",
                             "quantize them one command at a time")
    jobs = []  # (export, format, recipe): FORMAT=NAME applies to that format's export only
    for token in (t.strip() for t in args.recipe.split(",") if t.strip()):
        only, _, name = token.rpartition("=")
        if only and only not in formats:
            raise GemmaEdgeError(f"--recipe {token}: none of the exports is {only}",
                                 f"the exports are {', '.join(formats)}")
        jobs += [(e, f, name) for e, f in zip(exports, formats, strict=True) if only in ("", f)]
    outs = {}
    for export, fmt, name in jobs:  # every recipe is checked before the (slow) model load
        get_recipe(name, fmt)
        outs[export, name] = (Path(args.out) if args.out and len(jobs) == 1 else
                              (Path(args.out) if args.out else export.parent) / f"{fmt}-{name}")
        if outs[export, name].exists() and not args.overwrite:
            raise GemmaEdgeError(f"{outs[export, name]} already exists",
                                 "pass --overwrite or choose another --out")
    inputs = manifests[0]["inputs"]
    ref = load_source(inputs["source"], variant=inputs.get("variant"))
    results = {}
    for export, fmt, name in jobs:  # one model load and one calibration for all of them
        out = outs[export, name]
        result = quantize_export(export, out, name, calibration=args.calibration, ref=ref,
                                 overwrite=args.overwrite, progress=not args.quiet)
        size = sum(f["bytes"] for f in result["files"].values())
        results[name if len(exports) == 1 else f"{fmt}-{name}"] = {
            "dir": str(out), "bytes": size, "wall_seconds": result["wall_seconds"],
            "grids": {k: result["quantization"][k] for k in ("body", "head")}}
        if not args.json:
            q = result["quantization"]
            print(f"{name}: {out}  {size / 2**20:.1f} MiB, {result['wall_seconds']:.1f} s "
                  f"(body {q['body']['grid']} {q['body']['method']}, head {q['head']['grid']} "
                  f"{q['head']['method']}, activations {q['activations']})")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_OK


def _cmd_package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.package import package

    artifact = Path(args.artifact)
    out = Path(args.out) if args.out else artifact.parent / f"{artifact.name}.{args.kind}"
    manifest = package(artifact, out, args.kind, overwrite=args.overwrite)
    size = sum(f["bytes"] for f in manifest["files"].values())
    summary = {"package": str(out), "kind": args.kind, "bytes": size,
               "tokens": manifest["tokens"], "checked": manifest["check"] is not None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        stops = ", ".join(f"{t}={i}" for t, i in manifest["tokens"]["stop_tokens"].items())
        print(f"{args.kind}: {out}  {size / 2**20:.1f} MiB  (BOS {manifest['tokens']['bos_token_id']}, "
              f"stop {stops}{'' if manifest['check'] else '; not checked yet: run gemma-edge check'})")
    return EXIT_OK


def _cmd_run_package(args: argparse.Namespace) -> int:
    from runtime_check.engines import open_engine

    engine = open_engine(args.source, threads=args.threads or 2)
    chat = {"on": True, "off": False}.get(args.chat, engine.manifest["inputs"].get("variant") == "it")
    pieces = []
    for piece in engine.generate(args.prompt, args.max_new_tokens, chat=chat):
        pieces.append(piece)
        if not args.json:
            print(piece, end="", flush=True)
    engine.close()
    if args.json:
        print(json.dumps({"engine": engine.name, "prompt": args.prompt, "text": "".join(pieces)}))
    else:
        print()
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from runtime_check.engines import benchmark

    result = benchmark(args.package, prefill_tokens=args.prefill_tokens,
                       decode_tokens=args.decode_tokens, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['engine']} ({result['threads']} threads): load {result['load_s']:.2f} s, "
              f"TTFT {1000 * result['ttft_s']:.0f} ms for {result['prompt_tokens']} tokens, "
              f"prefill {result['prefill_tps']:.1f} tok/s, decode {result['decode_tps']:.1f} tok/s, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    return EXIT_OK


def _cmd_build(args: argparse.Namespace) -> int:
    from gemma_edge.pipeline import build_command
    from runtime_check.report import format_summary

    summary = build_command(args.spec, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k not in ("report_data", "error")},
                         indent=2))
    else:
        done = [s for s in summary["stages"] if not s["skipped"]]
        print(f"build: {len(done)} stage(s) run, {len(summary['stages']) - len(done)} up to date, "
              f"{summary['seconds']:.0f} s")
        print(format_summary(summary["report_data"]["artifacts"]))
        for pkg in summary["packages"]:
            print(f"package: {pkg}")
        print(f"report: {summary['report']}")
    if "error" in summary:
        raise summary["error"]
    return EXIT_OK


DEFAULT_EVAL_TEXT = "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1"


def _cmd_check(args: argparse.Namespace) -> int:
    from gemma_edge.errors import GateFailedError
    from gemma_edge.sources import load_source
    from gemma_edge.texts import load_text
    from runtime_check.check import check_artifact
    from runtime_check.report import format_summary, write_check_report

    text = load_text(args.text)
    ref = load_source(args.against)
    result = check_artifact(args.artifact, ref, text=text, max_tokens=args.max_tokens,
                            greedy_tokens=args.greedy_tokens, gates_file=args.gates,
                            threads=args.threads, latency=not args.no_latency)
    where = write_check_report(result, args.artifact)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "metrics"} | {
            "metrics": {k: v for k, v in result["metrics"].items() if k != "kld_per_position"},
            "report": str(where / "report.html")}, indent=2))
    else:
        print(format_summary([result]))
        print(f"report: {where / 'report.html'}")
    if not result["passed"]:
        failed = [g["text"] for g in result["gates"] if not g["passed"]]
        raise GateFailedError(f"{result['name']} failed {len(failed)} gate(s): "
                              + "; ".join(failed), f"see {where / 'report.html'}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from runtime_check.report import build_report, format_summary

    html, report = build_report(args.build_dir)
    if args.json:
        print(json.dumps({"report": str(html), "passed": report["passed"],
                          "artifacts": len(report["artifacts"])}, indent=2))
    else:
        print(format_summary(report["artifacts"]))
        print(f"report: {html}")
    return EXIT_OK if report["passed"] else EXIT_GATE


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress or status lines")

    parser = _Parser(prog="gemma-edge", parents=[common],
                     description="Turn a Gemma checkpoint into verified on-device artifacts.",
                     epilog="exit codes: 0 ok, 1 internal bug, 2 usage or input error, "
                            "3 a parity or latency gate failed")
    parser.add_argument("--version", action="version", version=f"gemma-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("info", _cmd_info, "describe a model: architecture, parameters, sizes, tokenizer")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")

    p = add("run", _cmd_run, "generate text greedily, streaming: with the PyTorch reference, "
                             "or with a package in its on-device engine")
    p.add_argument("source", metavar="SOURCE|PACKAGE", help=SOURCE_HELP + ", or a package directory")
    p.add_argument("--prompt", required=True, help="text to continue (IT models: a user turn)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                   help="wrap the prompt in the chat template (auto: for IT models)")
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")

    p = add("export", _cmd_export, "export a float decoder graph with an explicit KV cache")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--format", default="tflite,onnx",
                   help="comma-separated: " + ", ".join(EXPORTERS) + " (default: both)")
    p.add_argument("--out", required=True, help="build directory; writes OUT/<format>/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--prefill-lengths", type=_int_list, default=None,
                   help="tflite: prefill signature lengths (default 32,128,512, "
                        "those that fit the cache)")
    p.add_argument("--cache-length", type=int, default=None,
                   help="tflite: KV cache capacity in tokens (default 1024, or the "
                        "model's context if smaller)")
    p.add_argument("--head-block", type=int, default=0,
                   help="tflite: store the tied embedding / LM head as column parts of N "
                        "inputs, so int8 gets one scale per N inputs of each row (more "
                        "faithful int8, slower LiteRT-LM decode; default 0: one tensor)")
    p.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=None,
                   help="tflite: rotate the weights' input spaces (orthogonal, seeded), so "
                        "LiteRT's per-row int8 weights and dynamic int8 activations lose "
                        "far less (README, Quantization); same function in float. Default: "
                        "on, unless --head-block is given")
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")

    from quantization.recipes import RECIPES  # data only: no torch

    p = add("quantize", _cmd_quantize, "quantize a float export (int8, int4) into a new artifact")
    p.add_argument("export_dir", metavar="EXPORT_DIR", nargs="+",
                   help="fp32 export directories of one model (one model load and one "
                        "calibration for all)")
    p.add_argument("--recipe", required=True,
                   help="comma-separated recipe names: " + ", ".join(RECIPES) + "; FORMAT=NAME "
                        "applies to that format's export only (e.g. tflite=int4-calibrated)")
    p.add_argument("--calibration", default=None,
                   help="calibration text for calibrated recipes: a UTF-8 file or "
                        "builtin:<name>[+<name>...] (default: shipped text that never "
                        "overlaps the evaluation text)")
    p.add_argument("--out", default=None,
                   help="output directory (default: next to the export, <format>-<recipe>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = add("package", _cmd_package, "package an artifact for an on-device engine "
                                     "(.litertlm for LiteRT-LM, ONNX bundle for onnxruntime-genai)")
    p.add_argument("artifact", metavar="ARTIFACT_DIR", help="an export or quantize output directory")
    p.add_argument("--as", dest="kind", required=True, choices=("litertlm", "onnx-bundle"))
    p.add_argument("--out", default=None, help="package directory (default: ARTIFACT_DIR.<kind>)")
    p.add_argument("--overwrite", action="store_true")

    p = add("bench", _cmd_bench, "TTFT, prefill and decode tokens/s and peak RSS of a package "
                                 "in its engine (hashes verified first)")
    p.add_argument("package", metavar="PACKAGE")
    p.add_argument("--prefill-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)

    p = add("check", _cmd_check, "verify an artifact against the PyTorch reference; "
                                 "exit 3 if a gate fails")
    p.add_argument("artifact", metavar="ARTIFACT", help="an export directory (tflite or onnx)")
    p.add_argument("--against", required=True, metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--text", default=DEFAULT_EVAL_TEXT,
                   help="held-out text: a UTF-8 file or builtin:<name>[+<name>...]")
    p.add_argument("--gates", default=None, help="gates JSON (default: the built-in gates)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens of text to compare")
    p.add_argument("--greedy-tokens", type=int, default=32, help="greedy tokens per prompt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-latency", action="store_true",
                   help="skip the latency run (load, TTFT, prefill/decode tok/s, peak RSS)")

    p = add("build", _cmd_build, "run the whole pipeline from a spec (export, quantize, check, "
                                 "package, report); skips stages whose inputs are unchanged; "
                                 "exit 3 if a gate fails")
    p.add_argument("spec", metavar="SPEC.toml", help="e.g. gemma-edge.toml")

    p = add("report", _cmd_report, "one comparison page for every checked artifact of a build")
    p.add_argument("build_dir", metavar="BUILD_DIR")
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (a handler holding an old, closed stream
    would break library use after one CLI call, e.g. in tests or notebooks)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_output(quiet: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF kernels only; we run none
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter
    for noisy in ("torchao", "torch.utils._pytree"):  # optional-kernel and pytree notices
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _configure_output(args.quiet)
    interrupts.install()
    try:
        return args.func(args)
    except GemmaEdgeError as exc:
        print(f"gemma-edge: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gemma-edge: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug in gemma-edge: show everything
        traceback.print_exc()
        print("gemma-edge: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_BUG


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
