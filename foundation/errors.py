"""One error family for everything a user can fix, and the exit codes CI reads.

The CLI prints a `GemmaEdgeError` as one line and exits with its `exit_code`;
anything else is a bug in gemma-edge and exits 1 with a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_GATE = 3


class GemmaEdgeError(Exception):
    """A problem the user can fix: the message says what is wrong and how to fix it."""

    exit_code = EXIT_USAGE

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem.rstrip(".")
        if self.fix:
            text += f"; {self.fix[0].lower()}{self.fix[1:].rstrip('.')}"
        return " ".join(text.split())


class SourceError(GemmaEdgeError):
    """A model source is missing, unreadable, corrupt or of an unsupported architecture."""


class MissingExtraError(GemmaEdgeError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this needs the '{extra}' extra ({module} is not installed)",
            f"run: pip install 'gemma-edge[{extra}]'",
        )


def require_extra(extra: str, modules: dict[str, str]) -> None:
    """Raise MissingExtraError naming the first of {import name: distribution} not installed."""
    import importlib.util

    for module, dist in modules.items():
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(extra, dist)


class GateFailedError(GemmaEdgeError):
    """A parity or latency gate failed; artifacts and report were still written."""

    exit_code = EXIT_GATE
