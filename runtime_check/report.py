"""report.json (schema-versioned, for machines) and a self-contained report.html (for people).

`write_check_report` writes one artifact's check; `build_report` gathers every check
under a build directory into one comparison page.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir
from foundation.errors import GemmaEdgeError
from foundation.formats import CHECK_DIR, CHECK_REPORT
from runtime_check import svg_plots

REPORT_SCHEMA = 1

DEFINITIONS = [
    ("KLD", "KL(p_ref || p_artifact) per position in nats, over teacher-forced held-out "
            "text (llama.cpp --kl-divergence); mean, median, p99, max."),
    ("top-1", "share of positions where the artifact's most likely token is the reference's."),
    ("Δp top", "p_artifact − p_reference of the reference's top token; mean and RMS."),
    ("Δp next", "the same for the text's actual next token (llama.cpp's Δp)."),
    ("PPL ratio", "perplexity of the artifact over the reference's, same text and tokens."),
    ("max |Δlogit|", "largest absolute logit difference: the check for float artifacts."),
    ("greedy", "leading generated tokens that match the reference, per prompt."),
]


def write_check_report(result: dict[str, Any], artifact: str | Path) -> Path:
    """ARTIFACT/check/{report.json, report.html}, replaced atomically."""
    target = Path(artifact) / CHECK_DIR
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / CHECK_REPORT).write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.html").write_text(render_html([result], title=f"gemma-edge check: "
                                                                     f"{result['name']}"))
    return target


def verified_check(report: Path, *, package: bool = False) -> dict[str, Any]:
    """A check report (an engine report of a package: package=True), after its artifact or
    package was verified to hold exactly the files it checked: a report never speaks for
    files changed after their check."""
    from foundation.integrity import content_hash, verify_artifact, verify_package

    what = "engine check" if package else "check"
    try:
        result = json.loads(report.read_text(encoding="utf-8"))
        checked = result["package_sha256" if package else "artifact_sha256"]
    except (ValueError, TypeError, KeyError):
        raise GemmaEdgeError(f"{report} is not a readable {what} report",
                             f"run gemma-edge check {report.parent.parent} again") from None
    verify = verify_package if package else verify_artifact
    if content_hash(verify(report.parent.parent)) != checked:
        raise GemmaEdgeError(f"{report} is the {what} of other files than "
                             f"{report.parent.parent} now holds",
                             f"run gemma-edge check {report.parent.parent} again")
    return result


def build_report(build_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """BUILD_DIR/report.{json,html} comparing every checked artifact under BUILD_DIR."""
    build = Path(build_dir)
    checks = sorted(build.rglob(f"{CHECK_DIR}/{CHECK_REPORT}"))
    if not checks:
        raise GemmaEdgeError(f"no checked artifacts under {build}",
                             "run gemma-edge check on the artifacts first")
    from foundation.formats import ENGINE_REPORT

    results = [verified_check(p) for p in checks]
    engines = [verified_check(p, package=True)
               for p in sorted(build.rglob(f"{CHECK_DIR}/{ENGINE_REPORT}"))]
    report = {"schema": REPORT_SCHEMA, "build": str(build), "generated": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "artifacts": results, "packages": engines,
        "passed": all(r["passed"] for r in [*results, *engines])}
    (build / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (build / "report.html").write_text(render_html(results, title=f"gemma-edge report: {build}",
                                                   engines=engines))
    return build / "report.html", report


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        m, lat = r["metrics"], r.get("latency") or {}
        rows.append({
            "artifact": r["name"], "format": r["format"], "recipe": r["recipe"],
            "size_mib": r["size_bytes"] / 2**20, "kld_mean": m["kld_mean"],
            "top1": m["top1_agreement"], "ppl_ratio": m["ppl_ratio"],
            "max_dlogit": m["max_abs_delta_logit"], "greedy": m["greedy_match_fraction"],
            "ttft_ms": lat.get("ttft_ms"), "decode_tps": lat.get("decode_tps"),
            "passed": r["passed"],
            "failed_gates": [g["text"] for g in r["gates"] if not g["passed"]],
        })
    return rows


def format_summary(results: list[dict[str, Any]]) -> str:
    rows = summary_rows(results)
    name_w = max([8, *(len(r["artifact"]) for r in rows)])
    recipe_w = max([6, *(len(r["recipe"]) for r in rows)])
    head = (f"{'artifact':{name_w}} {'fmt':6} {'recipe':{recipe_w}} {'MiB':>7} {'KLD':>9} {'top-1':>7} "
            f"{'PPLx':>6} {'max|Δl|':>9} {'greedy':>7} {'TTFT ms':>8} {'dec t/s':>8}  result")
    lines = [head]
    for row in rows:
        verdict = "PASS" if row["passed"] else "FAIL: " + "; ".join(row["failed_gates"])
        lines.append(f"{row['artifact']:{name_w}} {row['format']:6} {row['recipe']:{recipe_w}} "
                     f"{row['size_mib']:7.1f} {row['kld_mean']:9.2e} {row['top1']:7.2%} "
                     f"{row['ppl_ratio']:6.3f} {row['max_dlogit']:9.2e} {row['greedy']:7.0%} "
                     f"{_fmt(row['ttft_ms'], '8.1f'):>8} {_fmt(row['decode_tps'], '8.1f'):>8}  "
                     f"{verdict}")
    return "\n".join(lines)


def engine_rows(engines: list[dict[str, Any]], results: list[dict[str, Any]] = ()) -> list[dict]:
    """One row per package run in its engine, with the Python runner's numbers of the
    artifact it packages beside the engine's own."""
    python = {r["name"]: r.get("latency") or {} for r in results}
    rows = []
    for e in engines:
        lat, py = e.get("latency") or {}, python.get(e["artifact"], {})
        rows.append({
            "package": e["name"], "artifact": e["artifact"], "engine": e["engine"],
            "recipe": e["recipe"],
            "greedy": f"{sum(g['agrees'] for g in e['greedy'])}/{len(e['greedy'])}",
            "ttft_ms": lat["ttft_s"] * 1000 if lat.get("ttft_s") is not None else None,
            "prefill_tps": lat.get("prefill_tps"), "decode_tps": lat.get("decode_tps"),
            "peak_rss_mib": lat.get("peak_rss_mib"), "python_decode_tps": py.get("decode_tps"),
            "python_ttft_ms": py.get("ttft_ms"), "passed": e["passed"],
            "failed_gates": [g["text"] for g in e["gates"] if not g["passed"]]})
    return rows


def format_engine_summary(engines: list[dict[str, Any]], results: list[dict[str, Any]] = ()) -> str:
    rows = engine_rows(engines, results)
    name_w = max([7, *(len(r["package"]) for r in rows)])
    lines = [f"{'package':{name_w}} {'engine':17} {'greedy≤tie':>10} {'TTFT ms':>8} "
             f"{'pre t/s':>8} {'dec t/s':>8} {'RSS MiB':>8} {'py dec':>7}  result"]
    for r in rows:
        verdict = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failed_gates"])
        lines.append(f"{r['package']:{name_w}} {r['engine']:17} {r['greedy']:>10} "
                     f"{_fmt(r['ttft_ms'], '8.1f'):>8} {_fmt(r['prefill_tps'], '8.1f'):>8} "
                     f"{_fmt(r['decode_tps'], '8.1f'):>8} {_fmt(r['peak_rss_mib'], '8.0f'):>8} "
                     f"{_fmt(r['python_decode_tps'], '7.1f'):>7}  {verdict}")
    return "\n".join(lines)


def _engine_section(engines: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    """The packages as an app runs them: greedy against the reference and the engine's speed."""
    if not engines:
        return ""
    rows = engine_rows(engines, results)
    table = "".join(
        f"<tr class={'pass' if r['passed'] else 'fail'}><td>{escape(r['package'])}</td>"
        f"<td>{escape(r['engine'])}</td><td>{r['greedy']}</td>"
        f"<td>{_fmt(r['ttft_ms'], '.0f')}</td><td>{_fmt(r['prefill_tps'], '.1f')}</td>"
        f"<td>{_fmt(r['decode_tps'], '.1f')}</td><td>{_fmt(r['peak_rss_mib'], '.0f')}</td>"
        f"<td>{_fmt(r['python_ttft_ms'], '.0f')}</td><td>{_fmt(r['python_decode_tps'], '.1f')}</td>"
        f"<td>{'PASS' if r['passed'] else 'FAIL'}</td></tr>" for r in rows)
    greedy = "".join(
        f"<tr><td>{escape(e['name'])}</td><td>{escape(g['prompt'])}</td>"
        f"<td>{g['match']}/{g['of']} (needs {g['required']})</td>"
        f"<td>{escape(g['engine'][:120])}</td></tr>" for e in engines for g in e["greedy"])
    return (f"<section><h2>Packages in their engines</h2><p>Each package run in the engine an "
            f"app uses, against the reference: greedy tokens must match up to the reference's "
            f"first near-tie (top-2 logits &lt; 0.1 apart) or stop token; speed from the "
            f"engine's own counters, beside the Python runner's numbers of the same "
            f"artifact.</p><table id=engines><tr><th>package</th><th>engine</th>"
            f"<th>greedy ≤ tie</th><th>TTFT ms</th><th>prefill tok/s</th><th>decode tok/s</th>"
            f"<th>peak MiB</th><th>Python TTFT ms</th><th>Python decode tok/s</th>"
            f"<th>result</th></tr>{table}</table><h3>Greedy in the engine</h3><table "
            f"class=greedy><tr><th>package</th><th>prompt</th><th>match</th>"
            f"<th>engine's continuation</th></tr>{greedy}</table></section>")


def _speed_plot(rows: list[dict[str, Any]], engines: list[dict[str, Any]],
                results: list[dict[str, Any]]) -> str:
    """Decode tok/s per artifact: the Python runner's, and its package's engine's beside it."""
    engine = {e["artifact"]: e["decode_tps"] for e in
              engine_rows(engines, results) if e["decode_tps"] is not None}
    items = [(r["artifact"], [r["decode_tps"], engine.get(r["artifact"])]) for r in rows
             if r["decode_tps"] is not None or r["artifact"] in engine]
    if not items:
        return ""
    series = ("Python runner", "engine (package)") if engine else ("Python runner",)
    return svg_plots.bars([(n, v[:len(series)]) for n, v in items], "Decode speed",
                          "tokens/s", series=series)


def _adapter_line(result: dict[str, Any]) -> str:
    """The LoRA adapter merged into the checked model, by path and sha256 (foundation/adapters)."""
    adapter = result.get("adapter")
    if not adapter:
        return ""
    return (f" LoRA adapter <code>{escape(adapter['path'])}</code> (sha256 "
            f"<code>{escape(adapter['sha256'])}</code>, r={adapter['r']}), merged; the reference "
            "is the unmerged PEFT model.")


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _tie_note(g: dict) -> str:
    """Where the reference itself nearly tied (older reports lack the field)."""
    at = g.get("reference_near_tie_at")
    if at is None:
        return ""
    return (f" <small>(reference near-tie at step {at + 1}: top-2 logits "
            f"{g['reference_near_tie_margin']:.3f} apart)</small>")


def _gate_item(gate: dict[str, Any]) -> str:
    mark, cls = ("✔", "pass") if gate["passed"] else ("✘", "fail")
    miss = "" if gate["passed"] else f" (missed by {gate['missed_by']:.3g})"
    return f"<li class={cls}>{mark} {escape(gate['text'])}{miss}</li>"


def _layer_plot(layers: list[dict[str, Any]] | None) -> str:
    """Per-layer error of a quantized artifact: output error on calibration text where the
    recipe was calibrated, else the relative weight error, one point per Linear in model order."""
    if not layers:
        return ""
    key = "output_error" if all(x.get("output_error") is not None for x in layers) else "weight_error"
    label = "layer output error" if key == "output_error" else "weight error ||ΔW||/||W||"
    return svg_plots.line([x[key] for x in layers], f"Per-layer {label}", "relative error",
                          xlabel="Linear layer (model order; last = LM head)")


def render_html(results: list[dict[str, Any]], *, title: str,
                engines: list[dict[str, Any]] = ()) -> str:
    rows = summary_rows(results)
    table = "".join(
        f"<tr class={'pass' if r['passed'] else 'fail'}><td>{escape(r['artifact'])}</td>"
        f"<td>{escape(str(r['format']))}</td><td>{escape(r['recipe'])}</td>"
        f"<td>{r['size_mib']:.1f}</td><td>{r['kld_mean']:.3g}</td><td>{r['top1']:.2%}</td>"
        f"<td>{r['ppl_ratio']:.4f}</td><td>{r['max_dlogit']:.2e}</td><td>{r['greedy']:.0%}</td>"
        f"<td>{_fmt(r['ttft_ms'], '.0f')}</td><td>{_fmt(r['decode_tps'], '.1f')}</td>"
        f"<td>{'PASS' if r['passed'] else 'FAIL'}</td></tr>" for r in rows)
    sections = []
    for r in results:
        m = r["metrics"]
        gates = "".join(_gate_item(g) for g in r["gates"])
        greedy = "".join(
            f"<tr><td>{escape(g['prompt'])}</td><td>{g['match']}/{g['of']}{_tie_note(g)}</td>"
            f"<td>{escape(g['artifact'][:120])}</td></tr>" for g in r["greedy"])
        stats = (f"KLD mean {m['kld_mean']:.3g}, median {m['kld_median']:.3g}, p99 "
                 f"{m['kld_p99']:.3g}, max {m['kld_max']:.3g}; Δp top mean "
                 f"{m['delta_p_top_mean']:.3g} (RMS {m['delta_p_top_rms']:.3g}); Δp next RMS "
                 f"{m['delta_p_next_rms']:.3g}; PPL {m['ppl_artifact']:.3f} vs reference "
                 f"{m['ppl_reference']:.3f}")
        sections.append(
            f"<section><h2>{escape(r['name'])} <small>({escape(str(r['format']))}, "
            f"{escape(r['recipe'])})</small></h2><p>{escape(stats)}. "
            f"{r['text_tokens']} tokens ({_parity_path(r)}).</p>"
            f"<h3>Gates</h3><ul class=gates>{gates}</ul>"
            f"<div class=plots>"
            f"{svg_plots.histogram(m['kld_per_position'], 'KLD distribution', 'KLD (nats)', log_x=True)}"
            f"{svg_plots.line(m['kld_per_position'], 'KLD per position', 'KLD (nats)')}"
            f"{_layer_plot(r.get('layers'))}</div>"
            f"<h3>Greedy generation</h3><table class=greedy><tr><th>prompt</th><th>match</th>"
            f"<th>artifact's continuation</th></tr>{greedy}</table></section>")
    scatter = svg_plots.scatter([(r["artifact"], r["size_mib"], r["kld_mean"]) for r in rows],
                                "Size vs mean KLD", "size (MiB)", "mean KLD (nats)")
    latency = _speed_plot(rows, list(engines), results)
    notes = sorted({n for r in results for n in r.get("notes", [])})
    defs = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in DEFINITIONS)
    verdict = ("all gates passed" if all(r["passed"] for r in [*rows, *engines])
               else "some gates FAILED")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1120px;color:#222}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
table.greedy td{{text-align:left}}
tr.fail td{{background:#fde2e2}}tr.pass td:last-child{{color:#1a7f37;font-weight:bold}}
tr.fail td:last-child{{color:#b42318;font-weight:bold}}li.fail{{color:#b42318;font-weight:bold}}
li.pass{{color:#1a7f37}}.plots svg{{margin:4px;border:1px solid #eee}}small{{color:#666}}
dt{{font-weight:bold}}section{{border-top:2px solid #eee;margin-top:20px}}</style></head><body>
<h1>{escape(title)}</h1><p><b>{verdict}</b> — {len(rows)} artifact(s), checked against
{escape(results[0]['source'])}.{_adapter_line(results[0])}</p>
<table id=summary><tr><th>artifact</th><th>format</th><th>recipe</th><th>MiB</th>
<th>mean KLD</th><th>top-1</th><th>PPL ratio</th><th>max |Δlogit|</th><th>greedy</th>
<th>TTFT ms</th><th>decode tok/s</th><th>result</th></tr>{table}</table>
<div class=plots>{scatter}{latency}</div>
{_engine_section(list(engines), results)}{''.join(sections)}
<section><h2>Notes</h2><ul>{''.join(f'<li>{escape(n)}</li>' for n in notes) or '<li>none</li>'}
</ul><h2>Definitions</h2><dl>{defs}</dl></section></body></html>
"""


def _parity_path(r: dict) -> str:
    """How the text went through the artifact (older reports decoded everything after prefill)."""
    prefill, steps = r["prefill_tokens"], r.get("decode_tokens")
    rest = r["text_tokens"] - prefill - (steps or 0)
    if steps is None or rest <= 0:
        return f"prefill {prefill}, then decode"
    return f"prefill {prefill}, {steps} decode steps, then prefill {rest}"
