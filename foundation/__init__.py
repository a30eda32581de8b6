"""The ground floor of gemma-edge: what every stage shares and nothing above it.

families and formats (registries as data), sources (loading a Gemma model), artifacts
(manifests, hashes, atomic directories), errors, texts, chat. Modules here import only
each other; the stage packages (exporter, quantization, runtime_check) import them, and
the orchestration (gemma_edge: CLI, build, public API) sits on top.
"""
