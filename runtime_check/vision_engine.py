"""Run vision-language exports and packages without their source (docs/vision.md).

`gemma-edge run EXPORT|PACKAGE --image FILE --prompt TEXT` needs what a loaded source gives
the prompt builders (foundation/vision_prompt.py): the tokenizer, the family's image tokens,
features per image, the variant, ShieldGemma 2's Yes/No ids. `artifact_reference` builds
that from the directory's own tokenizer and manifest, so the prompt is the one `check`
verified; the graphs run through the format's vision runner (onnxruntime or LiteRT).

`VisionBundleEngine` is the ONNX bundle's engine (the family's `onnx-bundle.engine`):
onnxruntime-genai 0.18 does not run the bundle (docs/vision.md), so text-only `run PACKAGE`
goes through the same runner, behind the package engine interface.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from foundation.errors import GemmaEdgeError


class _Generator:
    """Stands where foundation.vision_prompt.generator() walks: any attribute path ends here."""

    def __init__(self, facts: dict) -> None:
        self.config = SimpleNamespace(mm_tokens_per_image=int(facts["image_seq_length"]))
        classifier = facts.get("classifier") or {}
        self.yes_token_index = classifier.get("yes_token_id")
        self.no_token_index = classifier.get("no_token_id")

    def __getattr__(self, name: str):
        return self


def artifact_reference(directory: str | Path, manifest: dict):
    """A stand-in for the source's ReferenceModel: enough for prompts and stop tokens."""
    from transformers import AutoTokenizer

    from foundation.families import get_family
    from foundation.sources import ReferenceModel

    facts = manifest.get("vision")
    family = get_family(manifest.get("inputs", {}).get("family"))
    if not facts or not family.vision:
        raise GemmaEdgeError(f"--image needs a vision-language model; {directory} holds "
                             f"{family.title}, which reads text only",
                             "drop --image, or pass a vision export or package")
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    ref = SimpleNamespace(spec=str(directory), family=family, tokenizer=tokenizer,
                          model=_Generator(facts), checkpoint_dir=None,
                          variant=manifest.get("inputs", {}).get("variant"))
    ref.encode = lambda text, chat=None: ReferenceModel.encode(ref, text, chat=chat)
    stops = manifest.get("tokens", {}).get("stop_tokens")
    ref.stop_token_ids = (sorted(stops.values()) if stops else
                          ReferenceModel.stop_token_ids.fget(ref))
    return ref


class VisionBundleEngine:
    """A vision ONNX bundle behind the package engine interface (runtime_check/engines.py)."""

    name = "onnxruntime"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int,
                 max_tokens: int | None = None):
        from tokenizers import Tokenizer

        from runtime_check.vision_onnx_runner import VisionOnnxRunner

        self.manifest = manifest
        self.model_dir = Path(package_dir)
        self.runner = VisionOnnxRunner(package_dir, threads=threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.bos = manifest["tokens"]["bos_token_id"]
        self.stops = set(manifest["tokens"]["stop_tokens"].values())

    def token_metadata(self) -> dict[str, Any]:
        config = json.loads((self.model_dir / "genai_config.json").read_text())["model"]
        eos = config["eos_token_id"]
        return {"bos_token_id": config["bos_token_id"],
                "stop_token_ids": [[e] for e in (eos if isinstance(eos, list) else [eos])]}

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def generate(self, prompt: str, max_new_tokens: int, *, chat: bool = False) -> Iterator[str]:
        from foundation.chat import format_chat
        from runtime_check.generation import stream_pieces

        text = format_chat([{"role": "user", "content": prompt}], add_generation_prompt=True,
                           bos_token="") if chat else prompt
        self.runner.reset()
        self.runner.set_images(None)
        logits = self.runner.prefill([self.bos, *self.tokenize(text)])[-1]
        yield from stream_pieces(logits, self.runner.decode, self.tokenizer.decode, self.stops,
                                 max_new_tokens)

    def close(self) -> None:
        self.runner.close()


def run_vision_artifact(directory: str | Path, images, prompt, policies, **options) -> dict[str, Any]:
    """`run EXPORT|PACKAGE --image`: the directory's files verified, then run in its runtime."""
    from foundation.integrity import ARTIFACT_STAGES, verify_artifact
    from runtime_check.vision_run import run_vision

    options.pop("variant", None)  # the artifact's own
    manifest = verify_artifact(directory, "export or package", "`gemma-edge export` or `package`",
                               stages=(*ARTIFACT_STAGES, "package"))
    if manifest.get("format") not in ("onnx", "tflite"):
        raise GemmaEdgeError(f"{directory} is a {manifest.get('format')} artifact, which has no "
                             "vision runner", "run an ONNX or LiteRT vision export or package")
    ref = artifact_reference(directory, manifest)
    result = run_vision(ref, list(images), prompt, policies=list(policies),
                        export_dir=directory, **options)
    return {**result, "recipe": manifest.get("recipe")}
