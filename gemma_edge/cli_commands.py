"""The CLI's stage commands (export, quantize, package, bench, build, check, report): each
parses nothing and prints what the library returns; gemma_edge.cli builds the parser."""

from __future__ import annotations

import argparse
import json

from foundation.errors import EXIT_GATE, EXIT_OK, GateFailedError, GemmaEdgeError


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


def _build_stage(args: argparse.Namespace) -> int:
    from gemma_edge.build_spec import BuildSpec
    from gemma_edge.stage_store import run_stage

    result = run_stage(BuildSpec.load(args.spec), args.stage, store=args.store,
                       progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        how = f"ran in {result['seconds']:.0f} s" if result["ran"] else "up to date"
        print(f"{result['stage']}: {result['output']} ({how}, key {result['key'][:12]})"
              + (f"; stored in {result['store']}" if result["store"] else ""))
    if not result.get("passed", True):
        raise GateFailedError(f"gates failed in {result['stage']}",
                              f"see {result['output']}/report.html")
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
    if args.stage is not None:  # "" too: find_stage refuses it, a full build must not run
        return _build_stage(args)
    if args.store:
        raise GemmaEdgeError("--store goes with --stage", "add --stage NAME (see --plan)")
    from gemma_edge.api import build
    from runtime_check.report import format_engine_summary, format_summary

    summary = build(args.spec, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "report_data"}, indent=2))
    else:
        done = [s for s in summary["stages"] if not s["skipped"]]
        print(f"build: {len(done)} stage(s) run, {len(summary['stages']) - len(done)} up to date, "
              f"{summary['seconds']:.0f} s")
        data = summary["report_data"]
        print(format_summary(data["artifacts"]))
        if data.get("packages"):
            print(format_engine_summary(data["packages"], data["artifacts"]))
        for pkg in summary["packages"]:
            print(f"package: {pkg}")
        print(f"report: {summary['report']}")
    if not summary["passed"]:
        failed = [a["name"] for a in [*summary["artifacts"], *summary.get("engines", [])]
                  if not a["passed"]]
        raise GateFailedError(f"gates failed for {', '.join(failed)}", f"see {summary['report']}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from gemma_edge.api import check
    from runtime_check.report import format_engine_summary, format_summary

    result = check(args.artifact, args.against, text=args.text, max_tokens=args.max_tokens,
                   greedy_tokens=args.greedy_tokens, gates=args.gates, threads=args.threads,
                   latency=not args.no_latency, images=args.image or ())
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "metrics"} | {
            "metrics": {k: v for k, v in result["metrics"].items() if k != "kld_per_position"}},
            indent=2))
    else:
        print(format_engine_summary([result]) if "engine" in result else format_summary([result]))
        print(f"report: {result['report']}")
    if not result["passed"]:
        failed = [g["text"] for g in result["gates"] if not g["passed"]]
        raise GateFailedError(f"{result['name']} failed {len(failed)} gate(s): "
                              + "; ".join(failed), f"see {result['report']}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from runtime_check.report import build_report, format_engine_summary, format_summary

    html, report = build_report(args.build_dir)
    if args.json:
        print(json.dumps({"report": str(html), "passed": report["passed"],
                          "artifacts": len(report["artifacts"])}, indent=2))
    else:
        print(format_summary(report["artifacts"]))
        if report.get("packages"):
            print(format_engine_summary(report["packages"], report["artifacts"]))
        print(f"report: {html}")
    return EXIT_OK if report["passed"] else EXIT_GATE
