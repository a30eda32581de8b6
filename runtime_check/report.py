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


def verified_check(report: Path) -> dict[str, Any]:
    """A check report, after its artifact was verified to hold exactly the files it checked:
    a report never speaks for files changed after their check."""
    from foundation.integrity import content_hash, verify_artifact

    try:
        result = json.loads(report.read_text(encoding="utf-8"))
        checked = result["artifact_sha256"]
    except (ValueError, TypeError, KeyError):
        raise GemmaEdgeError(f"{report} is not a readable check report",
                             f"run gemma-edge check {report.parent.parent} again") from None
    if content_hash(verify_artifact(report.parent.parent)) != checked:
        raise GemmaEdgeError(f"{report} is the check of other files than "
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
    results = [verified_check(p) for p in checks]
    report = {"schema": REPORT_SCHEMA, "build": str(build), "generated": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "artifacts": results,
        "passed": all(r["passed"] for r in results)}
    (build / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (build / "report.html").write_text(render_html(results, title=f"gemma-edge report: {build}"))
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


def render_html(results: list[dict[str, Any]], *, title: str) -> str:
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
    lat = [(r["artifact"], r["decode_tps"]) for r in rows if r["decode_tps"] is not None]
    latency = svg_plots.bars(lat, "Decode speed", "tokens/s") if lat else ""
    notes = sorted({n for r in results for n in r.get("notes", [])})
    defs = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in DEFINITIONS)
    verdict = "all gates passed" if all(r["passed"] for r in rows) else "some gates FAILED"
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
{''.join(sections)}
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
