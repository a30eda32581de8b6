"""Cut streamed text at a stop token, the way the Android demo's core does (shared vectors).

Engines stream text pieces; a stop token such as `<end_of_turn>` can arrive split across
pieces ("<end_of" + "_turn>"). The filter holds back any tail that could still become a
stop token, shows everything before it, and reports when a stop token completed.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_STOPS = ("<end_of_turn>", "<eos>")


class StopTextFilter:
    def __init__(self, stops: Iterable[str] = DEFAULT_STOPS) -> None:
        self.stops = tuple(stops)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is now safe to show; empty once a stop token has been seen."""
        if self.stopped:
            return ""
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            shown, self.pending = self.pending[:cut], ""
            return shown
        hold = max((k for s in self.stops for k in range(1, len(s))
                    if self.pending.endswith(s[:k])), default=0)
        shown = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(shown):]
        return shown

    def finish(self) -> str:
        """End of stream: a held-back partial stop token was ordinary text after all."""
        rest, self.pending = ("" if self.stopped else self.pending), ""
        return rest
