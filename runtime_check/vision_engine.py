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

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from foundation.errors import GemmaEdgeError
from runtime_check.engines import GenaiEngine


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


class VisionBundleEngine(GenaiEngine):
    """A vision ONNX bundle behind the package engine interface: the genai bundle's engine
    with the vision graphs' onnxruntime runner in place of onnxruntime-genai's."""

    name = "onnxruntime"

    def _runner(self, package_dir: Path, threads: int):
        from runtime_check.vision_onnx_runner import VisionOnnxRunner

        return VisionOnnxRunner(package_dir, threads=threads)

    def _prefill(self, ids: list[int]):
        self.runner.set_images(None)
        return self.runner.prefill(ids)[-1]


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
