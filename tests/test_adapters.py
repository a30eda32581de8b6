"""LoRA adapters (`--adapter`): trained here on real text, merged, exported, checked.

The adapter is trained for a few steps on the tiny Gemma 3 so the adapted model measurably
differs from the base; the ONNX artifact must then match the unmerged PEFT model (base +
adapter), not the base. Hostile adapters are refused with one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from foundation.errors import SourceError
from foundation.texts import load_text
from gemma_edge.cli import main
from runtime_check.runner import teacher_forced_logits
from runtime_check.torch_runner import TorchRunner

BASE = "tiny:gemma3_text"
TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def train_adapter(out: Path, *, steps: int = 8, tokens: int = 257, **lora) -> Path:
    """A LoRA adapter fitted for a few Adam steps on real prose, saved with PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model

    from foundation.sources import load_source

    ref = load_source(BASE)
    ids = ref.tokenizer(load_text("builtin:austen_pride_and_prejudice_ch1"))["input_ids"][:tokens]
    x = torch.tensor([ids])
    config = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS,
                           "lora_dropout": 0.0, "task_type": "CAUSAL_LM", **lora})
    model = get_peft_model(ref.model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    losses = []
    torch.manual_seed(0)
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if steps >= 8:
        assert losses[-1] < losses[0] - 0.5, f"the adapter did not learn: {losses}"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return train_adapter(tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def adapted(adapter):
    from foundation.sources import load_source

    return load_source(BASE, adapter=str(adapter))


@pytest.fixture(scope="module")
def eval_ids(adapted):
    # held-out prose: not the chapter the adapter was trained on
    return adapted.encode(load_text("builtin:gemma_edge_field_notes"), chat=False)[:96]


@pytest.fixture(scope="module")
def adapted_onnx(adapted, tmp_path_factory):
    from exporter.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("lora-onnx") / "onnx"
    return out, export_onnx(adapted, out)


def _logits(model, ids):
    return teacher_forced_logits(TorchRunner(model, threads=2), ids, 32)


def test_adapter_changes_the_model_and_the_merge_is_exact(adapted, tiny, eval_ids):
    peft_logits = _logits(adapted.adapter_model, eval_ids)
    merged = _logits(adapted.model, eval_ids)
    base = _logits(tiny("gemma3_text").model, eval_ids)
    assert np.abs(merged - peft_logits).max() < 1e-4
    assert np.abs(base - peft_logits).max() > 1.0  # the adapter measurably moved the logits
    assert (base.argmax(-1) != peft_logits.argmax(-1)).mean() > 0.1
    assert type(adapted.model).__name__ == "Gemma3ForCausalLM"  # plain model: no LoRA layers


def test_adapter_enters_identity_spec_and_notes(adapted, adapter, tiny):
    from foundation.sources import source_identity

    assert adapted.spec == f"{BASE}+adapter:{adapter}"
    assert adapted.sha256 != tiny("gemma3_text").sha256
    assert source_identity(adapted.spec) == adapted.sha256
    assert adapted.adapter["r"] == 4 and adapted.adapter["target_modules"] == sorted(TARGETS)
    assert len(adapted.adapter["sha256"]) == 64
    assert any(adapted.adapter["sha256"][:16] in note for note in adapted.notes)


def test_identity_follows_the_adapter_bytes(adapter, tmp_path):
    from foundation.sources import source_identity

    other = tmp_path / "adapter"
    shutil.copytree(adapter, other)
    assert source_identity(f"{BASE}+adapter:{other}") == source_identity(f"{BASE}+adapter:{adapter}")
    config = json.loads((other / "adapter_config.json").read_text())
    config["lora_alpha"] = 16
    (other / "adapter_config.json").write_text(json.dumps(config))
    assert source_identity(f"{BASE}+adapter:{other}") != source_identity(f"{BASE}+adapter:{adapter}")


def test_onnx_export_matches_the_adapted_model_not_the_base(adapted_onnx, adapted, tiny, eval_ids):
    from runtime_check.onnx_runner import OnnxRunner

    out, manifest = adapted_onnx
    assert manifest["inputs"]["source"] == adapted.spec
    assert manifest["inputs"]["source_sha256"] == adapted.sha256
    got = teacher_forced_logits(OnnxRunner(out), eval_ids, 32)
    peft_logits = _logits(adapted.adapter_model, eval_ids)
    base = _logits(tiny("gemma3_text").model, eval_ids)
    assert np.abs(got - peft_logits).max() < 1e-4
    assert (got.argmax(-1) == peft_logits.argmax(-1)).all()
    assert np.abs(got - base).max() > 1.0


def test_check_passes_against_the_adapter_and_fails_against_the_base(adapted_onnx, adapted, tiny):
    from gemma_edge.api import check

    out, _ = adapted_onnx
    good = check(out, BASE, adapter=adapted.adapter["path"], latency=False, max_tokens=128,
                 greedy_tokens=8, ref=adapted)
    assert good["passed"], good["gates"]
    assert good["adapter"]["sha256"] == adapted.adapter["sha256"]
    assert good["metrics"]["top1_agreement"] == 1.0
    assert adapted.adapter["sha256"] in Path(good["report"]).read_text()  # the report names it
    bad = check(out, BASE, latency=False, max_tokens=128, greedy_tokens=8,
                ref=tiny("gemma3_text"))
    assert not bad["passed"]
    assert bad["metrics"]["kld_mean"] > 100 * max(good["metrics"]["kld_mean"], 1e-9)


def test_quantize_reloads_the_adapted_source(adapted_onnx, adapted, tmp_path):
    from gemma_edge.api import quantize

    out, _ = adapted_onnx
    made = quantize(out, ["int8-dynamic"], out=tmp_path / "onnx-int8", progress=False)
    manifest = made[str(tmp_path / "onnx-int8")]
    assert manifest["inputs"]["source_sha256"] == adapted.sha256


@pytest.mark.parametrize("lora", [{"use_rslora": True}, {"use_dora": True}])
def test_rslora_and_dora_merge_exactly(tmp_path, lora):
    from foundation.sources import load_source

    path = train_adapter(tmp_path / "adapter", steps=2, tokens=64, **lora)  # B != 0 after a step
    from safetensors.numpy import load_file

    assert all(np.abs(v).max() > 0 for k, v in load_file(path / "adapter_model.safetensors").items()
               if "lora_B" in k), "an untrained B would make the merge check vacuous"
    ref = load_source(BASE, adapter=str(path))
    ids = ref.encode(load_text("builtin:gemma_edge_field_notes"), chat=False)[:64]
    assert np.abs(_logits(ref.model, ids) - _logits(ref.adapter_model, ids)).max() < 1e-4


def _write(adapter: Path, tmp_path: Path, change) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    change(bad)
    return bad


def _set_config(**values):
    def change(path: Path):
        config = json.loads((path / "adapter_config.json").read_text())
        config.update(values)
        (path / "adapter_config.json").write_text(json.dumps(config))
    return change


def _rewrite_tensors(edit):
    def change(path: Path):
        from safetensors.torch import load_file, save_file

        tensors = load_file(path / "adapter_model.safetensors")
        save_file(edit(tensors), path / "adapter_model.safetensors")
    return change


def _rename_layer(tensors):
    return {k.replace("layers.0.", "layers.99."): v for k, v in tensors.items()}


def _widen(tensors):
    import torch

    return {k: torch.zeros(v.shape[0], v.shape[1] * 2) if k.endswith("q_proj.lora_A.weight") else v
            for k, v in tensors.items()}


def _embedding(tensors):
    import torch

    return {**tensors, "base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 10)}


HOSTILE = {
    "no-config": (lambda p: (p / "adapter_config.json").unlink(), "has no adapter_config.json"),
    "config-not-json": (lambda p: (p / "adapter_config.json").write_text("{r: 4"), "not valid JSON"),
    "config-not-utf8": (lambda p: (p / "adapter_config.json").write_bytes(b"\xff\xfe{"),
                        "not valid JSON"),
    "config-a-list": (lambda p: (p / "adapter_config.json").write_text("[1, 2]"),
                      "not a JSON object"),
    "not-lora": (_set_config(peft_type="PREFIX_TUNING"), "not LoRA"),
    "not-causal-lm": (_set_config(task_type="SEQ_CLS"), "not a causal LM"),
    "rank-zero": (_set_config(r=0), "r must be a positive integer"),
    "rank-text": (_set_config(r="4"), "r must be a positive integer"),
    "alpha-null": (_set_config(lora_alpha=None), "lora_alpha must be a number"),
    "no-targets": (_set_config(target_modules=[]), "target_modules must name modules"),
    "pickle-beside": (lambda p: (p / "adapter_model.bin").write_bytes(b"\x80\x04."),
                      "pickle weights"),
    "pickle-only": (lambda p: (p / "adapter_model.safetensors").rename(p / "adapter_model.bin"),
                    "pickle weights"),
    "no-weights": (lambda p: (p / "adapter_model.safetensors").unlink(),
                   "has no adapter_model.safetensors"),
    "truncated": (lambda p: (p / "adapter_model.safetensors").write_bytes(
        (p / "adapter_model.safetensors").read_bytes()[:-100]), "truncated"),
    "garbage": (lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x00" * 7),
                "damaged header"),
    "no-lora-tensors": (_rewrite_tensors(lambda t: {"x.weight": next(iter(t.values()))}),
                        "holds no LoRA tensors"),
    "missing-module": (_rewrite_tensors(_rename_layer), "does not have"),
    "wrong-shape": (_rewrite_tensors(_widen), "does not fit"),
    "tied-embedding": (_rewrite_tensors(_embedding), "ties to the LM head"),
    "tied-modules-to-save": (_set_config(modules_to_save=["lm_head"]), "ties to the LM head"),
    "unknown-target": (_set_config(target_modules=["no_such_proj"]), "does not fit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_adapter_is_refused_with_one_line(adapter, tmp_path, capsys, case):
    change, words = HOSTILE[case]
    bad = _write(adapter, tmp_path, change)
    out = tmp_path / "build"
    code = main(["export", BASE, "--adapter", str(bad), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and words in err[-1] and "Traceback" not in "\n".join(err), err
    assert not out.exists()  # no half artifact


@pytest.mark.parametrize("argv", [
    ["info", BASE, "--adapter", "/no/such/adapter"],
    ["run", BASE, "--adapter", "/no/such/adapter", "--prompt", "x"],
    ["check", "/no/such/artifact", "--against", BASE, "--adapter", "/no/such/adapter"],
])
def test_every_source_command_takes_adapter(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]


def test_adapter_given_twice_and_empty_parts_are_refused(adapter):
    from foundation.sources import load_source

    with pytest.raises(SourceError, match="already names an adapter"):
        load_source(f"{BASE}+adapter:{adapter}", adapter=str(adapter))
    with pytest.raises(SourceError, match="names no base model or no adapter"):
        load_source(f"{BASE}+adapter:")


def test_cli_info_and_run_use_the_adapter(adapter, capsys):
    assert main(["info", BASE, "--adapter", str(adapter), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "+adapter:" in info["source"]
    assert main(["run", BASE, "--adapter", str(adapter), "--prompt", "It is a truth",
                 "--max-new-tokens", "4", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["generated_tokens"]) == 4


def test_build_spec_adapter_changes_the_content_keys(adapter, tmp_path, capsys):
    plain = tmp_path / "plain.toml"
    plain.write_text(f'source = "{BASE}"\nformats = ["onnx"]\npackage = false\n')
    adapted_spec = tmp_path / "adapted.toml"
    adapted_spec.write_text(plain.read_text() + f'adapter = "{adapter}"\n')
    keys = []
    for spec in (plain, adapted_spec):
        assert main(["build", str(spec), "--plan", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        keys.append({row["name"]: row["key"] for row in plan["stages"]})
    assert plan["source"] == f"{BASE}+adapter:{adapter}"
    assert keys[0]["export onnx"] != keys[1]["export onnx"]
    bad = tmp_path / "bad.toml"
    bad.write_text(plain.read_text() + 'adapter = "/no/such/lora"\n')
    assert main(["build", str(bad), "--plan"]) == 2
    assert "is not a directory" in capsys.readouterr().err
