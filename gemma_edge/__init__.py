"""gemma-edge: turn a Gemma checkpoint into verified on-device artifacts.

The trunk package holds what every stage shares: families, sources, artifacts,
errors, the CLI and the pipeline. It imports nothing heavy at module level.
"""

__version__ = "0.1.0"
