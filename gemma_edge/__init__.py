"""gemma-edge: turn a Gemma checkpoint into verified on-device artifacts.

This package is the top floor: the public API (`from gemma_edge import export, quantize,
check, package, build`), the CLI and the build's stage graph. It stands on the stage
packages (exporter, quantization, runtime_check), which stand on `foundation`; nothing
below imports it. The API is loaded on first use, so `import gemma_edge` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["build", "check", "export", "package", "quantize", "run"]


def __getattr__(name: str):
    if name in __all__:
        from gemma_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'gemma_edge' has no attribute {name!r}")
