"""The `gemma-edge` command. Stage modules are imported inside the commands, so
`gemma-edge --help` starts without torch (a test holds that)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from foundation.errors import EXIT_GATE, EXIT_OK, EXIT_USAGE, GateFailedError
from foundation.formats import FORMATS, PACKAGE_KINDS
from foundation.texts import DEFAULT_EVAL_TEXT
from gemma_edge import __version__
from gemma_edge.guard import run_guarded

log = logging.getLogger("gemma_edge")

SOURCE_HELP = ("model: a Hugging Face checkpoint dir, a .gguf file, builtin:gemma3-270m, "
               "or tiny:<family>")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"gemma-edge: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _cmd_info(args: argparse.Namespace) -> int:
    from foundation.sources import load_source
    from gemma_edge.summary import describe, format_summary

    info = describe(load_source(args.source, variant=args.variant))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from gemma_edge.api import run

    def show(piece: str) -> None:
        print(piece, end="", flush=True)

    result = run(args.source, args.prompt, max_new_tokens=args.max_new_tokens,
                 chat={"auto": None, "on": True, "off": False}[args.chat], variant=args.variant,
                 threads=args.threads, on_piece=None if args.json else show)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print()
    if "ttft_seconds" in result:
        log.info("[%d prompt tokens, %d generated; TTFT %.0f ms, decode %s tok/s]",
                 result["prompt_tokens"], len(result["generated_tokens"]),
                 1000 * result["ttft_seconds"], result["decode_tokens_per_second"])
    return EXIT_OK


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("the text is not valid UTF-8") from None
    return text


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {text})")
    return value


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gemma_edge.api import export

    manifests = export(args.source, args.out, formats=args.format.split(","),
                       overwrite=args.overwrite, variant=args.variant,
                       prefill_lengths=args.prefill_lengths, cache_length=args.cache_length,
                       head_block=args.head_block, rotate=args.rotate)
    results = {}
    for fmt, manifest in manifests.items():
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
    from gemma_edge.api import quantize

    made = quantize(args.export_dir, args.recipe.split(","), out=args.out,
                    calibration=args.calibration, overwrite=args.overwrite, progress=not args.quiet)
    results = {}
    for out, result in made.items():
        size = sum(f["bytes"] for f in result["files"].values())
        name = result["recipe"] if len(args.export_dir) == 1 else f"{result['format']}-{result['recipe']}"
        results[name] = {
            "dir": str(out), "bytes": size, "wall_seconds": result["wall_seconds"],
            "grids": {k: result["quantization"][k] for k in ("body", "head")}}
        if not args.json:
            q = result["quantization"]
            print(f"{result['recipe']}: {out}  {size / 2**20:.1f} MiB, {result['wall_seconds']:.1f} s "
                  f"(body {q['body']['grid']} {q['body']['method']}, head {q['head']['grid']} "
                  f"{q['head']['method']}, activations {q['activations']})")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_OK


def _cmd_package(args: argparse.Namespace) -> int:
    from gemma_edge.api import package, package_target

    out = package_target(args.artifact, args.kind, args.out)
    manifest = package(args.artifact, args.kind, out=out, overwrite=args.overwrite)
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
    from gemma_edge.build_spec import BuildSpec

    if args.plan:
        from gemma_edge.stage_graph import describe_plan

        graph = describe_plan(BuildSpec.load(args.spec))
        if args.json:
            print(json.dumps(graph, indent=2))
        else:
            for row in graph["stages"]:
                state = "up to date" if row["fresh"] else "to run"
                print(f"{state:<10}  {row['name']}: {row['reason']}")
        return EXIT_OK
    from gemma_edge.api import build
    from runtime_check.report import format_summary

    summary = build(args.spec, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "report_data"}, indent=2))
    else:
        done = [s for s in summary["stages"] if not s["skipped"]]
        print(f"build: {len(done)} stage(s) run, {len(summary['stages']) - len(done)} up to date, "
              f"{summary['seconds']:.0f} s")
        print(format_summary(summary["report_data"]["artifacts"]))
        for pkg in summary["packages"]:
            print(f"package: {pkg}")
        print(f"report: {summary['report']}")
    if not summary["passed"]:
        failed = [a["name"] for a in summary["artifacts"] if not a["passed"]]
        raise GateFailedError(f"gates failed for {', '.join(failed)}", f"see {summary['report']}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from gemma_edge.api import check
    from runtime_check.report import format_summary

    result = check(args.artifact, args.against, text=args.text, max_tokens=args.max_tokens,
                   greedy_tokens=args.greedy_tokens, gates=args.gates, threads=args.threads,
                   latency=not args.no_latency)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "metrics"} | {
            "metrics": {k: v for k, v in result["metrics"].items() if k != "kld_per_position"}},
            indent=2))
    else:
        print(format_summary([result]))
        print(f"report: {result['report']}")
    if not result["passed"]:
        failed = [g["text"] for g in result["gates"] if not g["passed"]]
        raise GateFailedError(f"{result['name']} failed {len(failed)} gate(s): "
                              + "; ".join(failed), f"see {result['report']}")
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
    p.add_argument("--prompt", required=True, type=_utf8,
                   help="text to continue (IT models: a user turn)")
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                   help="wrap the prompt in the chat template (auto: for IT models)")
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads (default: all)")

    p = add("export", _cmd_export, "export a float decoder graph with an explicit KV cache")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--format", default="tflite,onnx",
                   help="comma-separated: " + ", ".join(FORMATS) + " (default: all)")
    p.add_argument("--out", required=True, help="build directory; writes OUT/<format>/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--prefill-lengths", type=_int_list, default=None,
                   help="tflite: prefill signature lengths (default 32,128,512, "
                        "those that fit the cache)")
    p.add_argument("--cache-length", type=_positive, default=None,
                   help="tflite: KV cache capacity in tokens (default 1024, or the "
                        "model's context if smaller)")
    p.add_argument("--head-block", type=int, default=0,
                   help="tflite: store the tied embedding / LM head as column parts of N "
                        "inputs, so int8 gets one scale per N inputs of each row (more "
                        "faithful int8, slower LiteRT-LM decode; default 0: one tensor)")
    p.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=None,
                   help="tflite: rotate the weights' input spaces (orthogonal, seeded), so "
                        "LiteRT's per-row int8 weights and dynamic int8 activations lose "
                        "far less (docs/quantization.md); same function in float. Default: "
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
    p.add_argument("--as", dest="kind", required=True, choices=tuple(PACKAGE_KINDS))
    p.add_argument("--out", default=None, help="package directory (default: ARTIFACT_DIR.<kind>)")
    p.add_argument("--overwrite", action="store_true")

    p = add("bench", _cmd_bench, "TTFT, prefill and decode tokens/s and peak RSS of a package "
                                 "in its engine (hashes verified first)")
    p.add_argument("package", metavar="PACKAGE")
    p.add_argument("--prefill-tokens", type=_positive, default=128)
    p.add_argument("--decode-tokens", type=_positive, default=64)
    p.add_argument("--threads", type=_positive, default=2)

    p = add("check", _cmd_check, "verify an artifact against the PyTorch reference; "
                                 "exit 3 if a gate fails")
    p.add_argument("artifact", metavar="ARTIFACT", help="an export directory (tflite or onnx)")
    p.add_argument("--against", required=True, metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--text", default=DEFAULT_EVAL_TEXT,
                   help="held-out text: a UTF-8 file or builtin:<name>[+<name>...]")
    p.add_argument("--gates", default=None, help="gates JSON (default: the built-in gates)")
    p.add_argument("--max-tokens", type=_positive, default=512, help="tokens of text to compare")
    p.add_argument("--greedy-tokens", type=_positive, default=32, help="greedy tokens per prompt")
    p.add_argument("--threads", type=_positive, default=2)
    p.add_argument("--no-latency", action="store_true",
                   help="skip the latency run (load, TTFT, prefill/decode tok/s, peak RSS)")

    p = add("build", _cmd_build, "run the whole pipeline from a spec (export, quantize, check, "
                                 "package, report); skips stages whose inputs are unchanged; "
                                 "exit 3 if a gate fails")
    p.add_argument("spec", metavar="SPEC.toml", help="e.g. gemma-edge.toml")
    p.add_argument("--plan", action="store_true",
                   help="print the stage graph (stages, dependencies, content keys, what would "
                        "run) without running it")

    p = add("report", _cmd_report, "one comparison page for every checked artifact of a build")
    p.add_argument("build_dir", metavar="BUILD_DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_guarded(lambda: args.func(args), quiet=args.quiet)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
