"""Gates as data: which metric must stay above or below what, per recipe family.

A gates file maps a recipe family (fp32, int8, int4) to a list of
{"metric": name, "min"|"max": value}. The default file ships in
runtime_check/gates/default.json; `--gates FILE` replaces it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError


def recipe_family(recipe: str) -> str:
    """fp32, int8-static -> int8, int4-block32 -> int4, ..."""
    for family in ("fp32", "int8", "int4"):
        if recipe.startswith(family):
            return family
    if recipe.startswith(("q8_", "q4_")):  # llama.cpp's GGUF block types (quantization/recipes.py)
        return f"int{recipe[1]}"
    return recipe


def load_gates(path: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    if path is None:
        text = (resources.files("runtime_check") / "gates" / "default.json").read_text()
        source = "default gates"
    else:
        p = Path(path)
        if not p.is_file():
            raise GemmaEdgeError(f"gates file '{path}' does not exist",
                                 "pass a JSON file like runtime_check/gates/default.json")
        try:
            text, source = p.read_text(encoding="utf-8"), str(p)
        except UnicodeDecodeError:
            raise GemmaEdgeError(f"gates file '{path}' is not UTF-8 text", "fix the gates file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GemmaEdgeError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno})",
                             "fix the gates file") from None
    if not isinstance(data, dict):
        raise GemmaEdgeError(f"{source} must be a JSON object of recipe families",
                             'e.g. {"int8": {"gates": [{"metric": "kld_mean", "max": 0.005}]}}')
    gates = {}
    for family, entry in data.items():
        if family.startswith("_"):
            continue
        items = entry.get("gates") if isinstance(entry, dict) else None
        if not isinstance(items, list) or not all(
                isinstance(g, dict) and isinstance(g.get("metric"), str)
                and ("min" in g) != ("max" in g)
                and isinstance(g.get("min", g.get("max")), (int, float))
                and not isinstance(g.get("min", g.get("max")), bool) for g in items):
            raise GemmaEdgeError(f"{source}: family '{family}' needs a list of gates, each "
                                 "with a metric and exactly one of min or max",
                                 'e.g. {"int8": {"gates": [{"metric": "kld_mean", "max": 0.005}]}}')
        gates[family] = items
    return gates


# gates on metrics named engine_* are evaluated by the engine check of a package
# (runtime_check/engine_check.py), the rest by the artifact's check
ENGINE_PREFIX = "engine_"


def gates_of(items: list[dict[str, Any]], *, engine: bool) -> list[dict[str, Any]]:
    """The gates an engine check (engine=True) or an artifact check evaluates."""
    return [g for g in items if g["metric"].startswith(ENGINE_PREFIX) == engine]


def evaluate_gates(metrics: dict[str, Any], gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per gate: the value, the bound, passed, and by how much it missed."""
    results = []
    broken = int(metrics.get("nonfinite_logits") or 0)
    for gate in gates:
        name = gate["metric"]
        if name not in metrics:
            raise GemmaEdgeError(f"gate on unknown metric '{name}'",
                                 "use one of: " + ", ".join(sorted(
                                     k for k, v in metrics.items() if isinstance(v, (int, float)))))
        value = float(metrics[name])
        if "max" in gate:
            bound = float(gate["max"])
            passed = value <= bound
            miss = value - bound
            text = f"{name} {value:.4g} <= {bound:.4g}"
        else:
            bound = float(gate["min"])
            passed = value >= bound
            miss = bound - value
            text = f"{name} {value:.4g} >= {bound:.4g}"
        if broken or not np.isfinite(value):  # NaN compares False both ways: be explicit
            passed, miss = False, float("inf")
            text += f" (FAIL: {broken} NaN/Inf logits)" if broken else " (FAIL: not a number)"
        results.append({"metric": name, "kind": "max" if "max" in gate else "min",
                        "bound": bound, "value": value, "passed": bool(passed),
                        "missed_by": 0.0 if passed else float(miss), "text": text})
    return results
