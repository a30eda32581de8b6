"""Ctrl-C (SIGINT) that cannot be lost.

Python runs a signal handler at the next bytecode of the main thread, which may be inside
a finalizer: a `__del__`, a gc callback (jax registers one), a weakref callback (importlib's
module locks). An exception raised there is printed as "Exception ignored" and dropped,
and the interrupted stage went on to write its artifact (an interrupted tiny export
finished in 4 runs of 30). So:
- a KeyboardInterrupt that Python drops reaches `sys.unraisablehook`, which delivers the
  SIGINT again 50 ms later, outside the finalizer;
- every SIGINT is recorded, and `atomic_output_dir` refuses to commit an artifact once one
  was received, whatever happened to the KeyboardInterrupt.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

REDELIVER_S = 0.05
CHILD_ENV = "GEMMA_EDGE_INTERRUPTIBLE"  # set by build for its child stages
_received = False
_redelivery: threading.Timer | None = None
_next_hook = sys.__unraisablehook__


def _cancel_redelivery() -> None:
    global _redelivery
    if _redelivery is not None:
        _redelivery.cancel()
        _redelivery = None


def _on_sigint(signum, frame) -> None:
    global _received
    _received = True
    _cancel_redelivery()
    raise KeyboardInterrupt


def _on_unraisable(unraisable) -> None:
    """A KeyboardInterrupt raised inside a finalizer was dropped: send the SIGINT again."""
    global _redelivery
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        _cancel_redelivery()
        _redelivery = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signal.SIGINT))
        _redelivery.daemon = True
        _redelivery.start()
        return
    _next_hook(unraisable)


def install() -> None:
    """Route SIGINT through the recording handler and dropped interrupts through the
    redelivery (main thread only, as Python requires); a new command starts with no
    interrupt on record."""
    global _received, _next_hook
    _received = False
    _cancel_redelivery()
    if threading.current_thread() is not threading.main_thread():
        return
    # a shell starts background jobs with SIGINT ignored, and we keep that, except in a
    # stage `build` runs as a child: it must stop when the build interrupts it
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_sigint) \
            or os.environ.get(CHILD_ENV) == "1":
        signal.signal(signal.SIGINT, _on_sigint)
        if sys.unraisablehook is not _on_unraisable:
            _next_hook, sys.unraisablehook = sys.unraisablehook, _on_unraisable


def interrupted() -> bool:
    """Whether SIGINT arrived during this command (a library may have wrapped the
    KeyboardInterrupt in its own exception on the way up)."""
    return _received


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived, even if its first raise was dropped."""
    if _received:
        _cancel_redelivery()
        raise KeyboardInterrupt
