"""The `gemma-edge` command. Stage modules are imported inside the commands, so
`gemma-edge --help` starts without torch (a test holds that)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from foundation.errors import EXIT_OK, EXIT_USAGE
from foundation.formats import FORMATS, PACKAGE_KINDS
from foundation.texts import DEFAULT_EVAL_TEXT
from gemma_edge import __version__
from gemma_edge.cli_commands import (
    _cmd_bench,
    _cmd_build,
    _cmd_check,
    _cmd_export,
    _cmd_package,
    _cmd_quantize,
    _cmd_report,
)
from gemma_edge.guard import run_guarded
from gemma_edge.serve import cmd_serve

log = logging.getLogger("gemma_edge")

ADAPTER_HELP = ("a PEFT LoRA adapter dir (adapter_config.json + adapter_model.safetensors), "
                "merged into SOURCE's weights")
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

    from foundation.errors import GemmaEdgeError

    if args.fim_prefix is not None or args.fim_suffix is not None:  # a code model's infill
        from gemma_edge.api import run_fim

        if args.prompt is not None:
            raise GemmaEdgeError("--prompt and --fim-prefix/--fim-suffix do not combine",
                                 "pass either a prompt or the code around the gap")
        result = run_fim(args.source, args.fim_prefix or "", args.fim_suffix or "",
                         max_new_tokens=args.max_new_tokens, variant=args.variant,
                         threads=args.threads, on_piece=None if args.json else show)
        print(json.dumps(result, indent=2) if args.json else "")
        return EXIT_OK
    if args.prompt is None and not (args.image or args.policy):
        raise GemmaEdgeError("the following arguments are required: --prompt",
                             "pass --prompt TEXT (or --fim-prefix/--fim-suffix for a code model)")
    if args.image or args.policy:  # a vision-language source (docs/vision.md)
        result = run(args.source, args.prompt, max_new_tokens=args.max_new_tokens,
                     variant=args.variant, threads=args.threads, images=args.image or (),
                     policies=args.policy or (), on_piece=None if args.json else show)
        if "violation_probability" in result and not args.json:
            for policy, p in result["violation_probability"].items():
                print(f"{policy}: P(violation) = {p:.4f}")
        print(json.dumps(result, indent=2) if args.json else "")
        return EXIT_OK
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
    p.add_argument("--adapter", metavar="DIR", help=ADAPTER_HELP)
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")

    p = add("run", _cmd_run, "generate text greedily, streaming: with the PyTorch reference, "
                             "or with a package in its on-device engine")
    p.add_argument("source", metavar="SOURCE|PACKAGE", help=SOURCE_HELP + ", or a package directory")
    p.add_argument("--adapter", metavar="DIR", help=ADAPTER_HELP)
    p.add_argument("--prompt", type=_utf8,
                   help="text to continue (IT models: a user turn); required unless --fim-*")
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                   help="wrap the prompt in the chat template (auto: for IT models)")
    p.add_argument("--variant", choices=("pt", "it"), help="override PT/IT detection")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads (default: all)")
    p.add_argument("--fim-prefix", type=_utf8, metavar="TEXT",
                   help="code models (CodeGemma): fill in the middle after this code")
    p.add_argument("--fim-suffix", type=_utf8, metavar="TEXT",
                   help="code models (CodeGemma): ... and before this code")
    p.add_argument("--image", action="append", metavar="FILE",
                   help="vision models (PaliGemma, Gemma 3 4B+): an image before the prompt "
                        "(repeatable)")
    p.add_argument("--policy", action="append", metavar="NAME",
                   help="ShieldGemma 2: print P(violation) of dangerous, sexual or violence "
                        "(repeatable; default: all three)")

    p = add("export", _cmd_export, "export a float decoder graph with an explicit KV cache")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--adapter", metavar="DIR", help=ADAPTER_HELP)
    p.add_argument("--format", default="tflite,onnx",
                   help="comma-separated: " + ", ".join(FORMATS) + " (default: tflite,onnx)")
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
                   help="tflite, onnx: rotate the weights' input spaces (orthogonal, seeded), so "
                        "LiteRT's per-row int8 weights and dynamic int8 activations lose "
                        "far less (docs/quantization.md); same function in float. Default: "
                        "on (tflite: unless --head-block is given)")
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

    p = add("serve", cmd_serve, "serve a web package on localhost (COOP/COEP headers for "
                                "onnxruntime-web threads); open the printed URL in a browser")
    p.add_argument("package", metavar="WEB_PACKAGE", help="a `gemma-edge package --as web` output")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")

    p = add("check", _cmd_check, "verify an artifact against the PyTorch reference; "
                                 "exit 3 if a gate fails")
    p.add_argument("artifact", metavar="ARTIFACT", help="an export directory (tflite or onnx)")
    p.add_argument("--against", required=True, metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--adapter", metavar="DIR", help=ADAPTER_HELP + " (the reference: base + adapter)")
    p.add_argument("--text", default=None,
                   help="held-out text: a UTF-8 file or builtin:<name>[+<name>...] "
                        f"(default: {DEFAULT_EVAL_TEXT}; artifacts only)")
    p.add_argument("--gates", default=None, help="gates JSON (default: the built-in gates)")
    p.add_argument("--max-tokens", type=_positive, default=512, help="tokens of text to compare")
    p.add_argument("--greedy-tokens", type=_positive, default=32, help="greedy tokens per prompt")
    p.add_argument("--threads", type=_positive, default=2)
    p.add_argument("--no-latency", action="store_true",
                   help="skip the latency run (load, TTFT, prefill/decode tok/s, peak RSS)")
    p.add_argument("--image", action="append", metavar="FILE",
                   help="vision artifacts: check on this image (repeatable): features, text "
                        "after the image, greedy captions, ShieldGemma 2 probabilities")

    p = add("build", _cmd_build, "run the whole pipeline from a spec (export, quantize, check, "
                                 "package, report); skips stages whose inputs are unchanged; "
                                 "exit 3 if a gate fails")
    p.add_argument("spec", metavar="SPEC.toml", help="e.g. gemma-edge.toml")
    p.add_argument("--plan", action="store_true",
                   help="print the stage graph (stages, dependencies, content keys, what would "
                        "run) without running it")
    p.add_argument("--stage", metavar="NAME",
                   help="run only this stage of the plan ('quantize onnx-int8' or "
                        "quantize-onnx-int8), its inputs taken from the build dir or --store")
    p.add_argument("--store", metavar="DIR",
                   help="with --stage: where stage outputs are found and put, by content key "
                        "(a directory CI carries between machines)")

    p = add("report", _cmd_report, "one comparison page for every checked artifact of a build")
    p.add_argument("build_dir", metavar="BUILD_DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_guarded(lambda: args.func(_with_adapter(args)), quiet=args.quiet)


def _with_adapter(args: argparse.Namespace) -> argparse.Namespace:
    """--adapter DIR rides in the source spec (BASE+adapter:DIR), so the stages that reload
    a source from a manifest (quantize, check, build) reload the adapted model."""
    if getattr(args, "adapter", None) is not None:
        from pathlib import Path

        from foundation.adapters import with_adapter
        from foundation.errors import GemmaEdgeError

        key = "against" if hasattr(args, "against") else "source"
        if key == "source" and (Path(args.source) / "manifest.json").is_file():
            raise GemmaEdgeError(f"{args.source} is a package: its weights are fixed",
                                 "pass --adapter with the base model, or export the adapted "
                                 "model and package that")
        setattr(args, key, with_adapter(getattr(args, key), args.adapter))
    return args


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
