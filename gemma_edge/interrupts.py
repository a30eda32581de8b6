"""Ctrl-C (SIGINT) that cannot be lost.

Python runs a signal handler at the next bytecode of the main thread, which may be
inside a garbage-collection callback or a `__del__` (jax registers one); an exception
raised there is printed as "Exception ignored" and dropped, so a KeyboardInterrupt can
vanish and the interrupted stage would go on to write its artifact. The handler here also
records the interrupt, and `atomic_output_dir` refuses to commit an artifact once one
was received, so an interrupted stage never leaves a finished-looking artifact behind.
"""

from __future__ import annotations

import signal
import threading

_received = False


def _on_sigint(signum, frame) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through the recording handler (main thread only, as Python requires);
    a new command starts with no interrupt on record."""
    global _received
    _received = False
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived, even if its first raise was swallowed."""
    if _received:
        raise KeyboardInterrupt
