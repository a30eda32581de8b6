"""Checks every runtime's runner must pass against the torch reference (shared by the
ONNX and LiteRT tests, tiny and real)."""

import numpy as np

from runtime_check.runner import Runner, greedy_generate, teacher_forced_logits
from runtime_check.torch_runner import TorchRunner


def assert_package_keeps_greedy(artifact, kind: str, ref, out) -> dict:
    """Package ARTIFACT as KIND at OUT and run it in its engine (`gemma-edge check PACKAGE`):
    every check prompt's greedy continuation equals the reference's up to its first
    near-tie. Returns the engine check."""
    from exporter.package import package
    from runtime_check.engine_check import check_package

    package(artifact, out, kind)
    result = check_package(out, ref, latency=False)
    print("\n" + "\n".join(f"{g['prompt']!r}: {g['match']}/{g['of']} (needs {g['required']})"
                           for g in result["greedy"]))
    assert result["metrics"]["engine_greedy_to_tie"] == 1.0, result["greedy"]
    assert result["passed"]
    return result


def assert_teacher_forced_parity(runner, model, ids, prefill: int, atol: float) -> np.ndarray:
    """Prefill then decode token by token; logits within atol of torch, same top-1 everywhere.

    Returns |Δlogit| per position so callers can report prefill and decode separately.
    """
    assert isinstance(runner, Runner)
    reference = teacher_forced_logits(TorchRunner(model, threads=2), ids, prefill)
    got = teacher_forced_logits(runner, ids, prefill)
    delta = np.abs(got - reference)
    print(f"prefill {prefill} + decode {len(ids) - prefill}: max |Δlogit| {delta.max():.2e} "
          f"(prefill {delta[:prefill].max():.2e}, decode {delta[prefill:].max():.2e})")
    assert delta.max() <= atol, f"max |Δlogit| {delta.max():.3g} > {atol}"
    assert (got.argmax(-1) == reference.argmax(-1)).all()
    # what `check` runs: a few decode steps, then the rest prefilled at that offset
    mixed = teacher_forced_logits(runner, ids, prefill, decode_steps=2)
    assert np.abs(mixed - reference).max() <= atol, "prefill after decode steps differs"
    return delta


def assert_greedy_matches(runner, model, prompt_ids, n: int) -> None:
    """n greedy tokens identical to torch's, and again after reset."""
    expect = list(greedy_generate(TorchRunner(model), prompt_ids, n))
    assert list(greedy_generate(runner, prompt_ids, n)) == expect
    assert list(greedy_generate(runner, prompt_ids, n)) == expect, "reset must forget the sequence"


def assert_engine_follows_artifact(artifact, package_dir, ref, tokens: int = 32) -> int:
    """The package's engine reproduces our runner's greedy tokens on the same artifact, every
    check prompt, up to the artifact's own first near-tie (where two kernels' rounding may
    part ways). For quantized artifacts, whose greedy parts from the fp32 reference's at
    their own error: this is what the engine adds, nothing. Returns the tokens compared."""
    from runtime_check.check import DEFAULT_PROMPTS, NEAR_TIE
    from runtime_check.engine_check import matched_tokens, required_tokens
    from runtime_check.engines import open_engine
    from runtime_check.open_runner import open_runner
    from runtime_check.runner import greedy_margins

    runner, engine = open_runner(artifact), open_engine(package_dir, threads=2)
    compared = 0
    try:
        for prompt in DEFAULT_PROMPTS:
            expect, margins = greedy_margins(runner, ref.encode(prompt), tokens)
            text = "".join(engine.generate(prompt, tokens))
            need = required_tokens(expect, margins, set(ref.stop_token_ids), NEAR_TIE)
            got = matched_tokens(ref.tokenizer, expect, text)
            print(f"\n{prompt!r}: engine follows the runner for {got}/{len(expect)} (needs {need})")
            assert got >= need, (prompt, text, ref.tokenizer.decode(expect))
            compared += need
    finally:
        runner.close()
        engine.close()
    assert compared > 0
    return compared
