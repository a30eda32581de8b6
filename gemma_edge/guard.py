"""How every gemma-edge process reports: one line and exit 2 for input errors, exit 3 for a
failed gate, a traceback and exit 1 only for bugs. The CLI and the build's child stages
both run their work through `run_guarded`.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable

from foundation import interrupts
from foundation.errors import EXIT_BUG, GemmaEdgeError

log = logging.getLogger("gemma_edge")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (a handler holding an old, closed stream
    would break library use after one CLI call, e.g. in tests or notebooks)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_output(quiet: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF kernels only; we run none
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter
    for noisy in ("torchao", "torch.utils._pytree"):  # optional-kernel and pytree notices
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def run_guarded(work: Callable[[], int | None], *, quiet: bool = False) -> int:
    configure_output(quiet)
    interrupts.install()
    try:
        return work() or 0
    except KeyboardInterrupt:
        print("gemma-edge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if interrupts.interrupted():  # e.g. torch.onnx re-raises a Ctrl-C as its own error
            print("gemma-edge: interrupted", file=sys.stderr)
            return 130
        if isinstance(exc, GemmaEdgeError):
            print(f"gemma-edge: error: {exc.one_line()}", file=sys.stderr)
            return exc.exit_code
        # a bug in gemma-edge: show everything
        traceback.print_exc()
        print("gemma-edge: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_BUG
