"""`package --as ollama`: a GGUF and the Modelfile Ollama builds a model from.

    ollama create my-gemma -f build/gguf-q4_0-calibrated.ollama/Modelfile
    ollama run my-gemma

The Modelfile says:
- `FROM ./model.gguf`: the artifact's GGUF, copied beside it (Ollama resolves the path
  against the Modelfile's directory);
- `TEMPLATE`: Gemma's turn format in Ollama's Go template language for IT models
  (`<start_of_turn>user ... <end_of_turn>` then `<start_of_turn>model`), as Ollama's own
  gemma3 library model writes it; for PT models the prompt as it is. Ollama adds BOS
  itself (the GGUF says `tokenizer.ggml.add_bos_token`);
- `PARAMETER stop` for each of the family's stop tokens found in the tokenizer
  (`<end_of_turn>`, `<eos>`): the ids the package manifest records, spelled as text.

The package manifest lists both files' sha256 like every package (exporter/package.py).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from foundation.errors import GemmaEdgeError
from foundation.formats import PACKAGE_KINDS

MODEL_FILE = PACKAGE_KINDS["ollama"].model_file
MODELFILE = "Modelfile"

# Ollama's Go template for Gemma's turns (a system message is a user turn, as in Ollama's
# gemma3 library model; gemma-edge's Jinja template folds it into the first user turn).
IT_TEMPLATE = (
    '{{- range $i, $_ := .Messages }}\n'
    '{{- $last := eq (len (slice $.Messages $i)) 1 }}\n'
    '{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user\n'
    '{{ .Content }}<end_of_turn>\n'
    '{{ if $last }}<start_of_turn>model\n'
    '{{ end }}\n'
    '{{- else if eq .Role "assistant" }}<start_of_turn>model\n'
    '{{ .Content }}{{ if not $last }}<end_of_turn>\n'
    '{{ end }}\n'
    '{{- end }}\n'
    '{{- end }}'
)
PT_TEMPLATE = "{{ .Prompt }}"


def modelfile_text(variant: str, stop_tokens: dict[str, int]) -> str:
    if not stop_tokens:
        raise GemmaEdgeError("the artifact's tokenizer has no stop tokens",
                             "re-export from a Gemma checkpoint with its own tokenizer")
    template = IT_TEMPLATE if variant == "it" else PT_TEMPLATE
    if '"""' in template:
        raise GemmaEdgeError("the template holds a triple quote", "fix the template")
    lines = [f"FROM ./{MODEL_FILE}", f'TEMPLATE """{template}"""']
    lines += [f"PARAMETER stop {json.dumps(token)}" for token in stop_tokens]
    return "\n".join(lines) + "\n"


def build_ollama(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    shutil.copy2(artifact / manifest["model_file"], tmp / MODEL_FILE)
    variant = manifest.get("inputs", {}).get("variant", "pt")
    (tmp / MODELFILE).write_text(modelfile_text(variant, tokens["stop_tokens"]))
    return [MODEL_FILE, MODELFILE]


def parse_modelfile(path: Path) -> dict:
    """FROM, TEMPLATE and PARAMETERs of a Modelfile we wrote (what tests read back)."""
    text = path.read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    return {
        "from": re.search(r"^FROM (.+)$", text, re.M).group(1).strip(),
        "template": template.group(1) if template else None,
        "parameters": [(name, json.loads(value)) for name, value in
                       re.findall(r"^PARAMETER (\S+) (.+)$", text, re.M)],
    }
