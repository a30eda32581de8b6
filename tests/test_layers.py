"""The import graph reads as floors: foundation -> stages (exporter, quantization,
runtime_check) -> orchestration (gemma_edge). An import goes down a floor or stays in
its own package; stage packages never import each other; no two modules import each
other. Every import counts, the ones inside functions too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = {"foundation": 1, "exporter": 2, "quantization": 2, "runtime_check": 2, "gemma_edge": 3}


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    graph = {}
    for package in FLOOR:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and
                    not node.level else [])
                found |= {n for n in names if n.split(".")[0] in FLOOR}
            graph[module] = found
    return graph


def test_imports_only_go_down_a_floor_or_stay_in_their_package():
    upward = []
    for module, targets in _imports().items():
        own = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and FLOOR[other] >= FLOOR[own]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_two_modules_import_each_other():
    graph = _imports()
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                    if a != b and a in graph.get(b, set())})
    assert not pairs, pairs


def test_the_public_api_is_the_clis_api():
    import gemma_edge
    from gemma_edge import api

    for name in ("export", "quantize", "check", "package", "build"):
        assert getattr(gemma_edge, name) is getattr(api, name)


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in FLOOR for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
