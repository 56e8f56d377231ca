"""The port of who follows a run live while it is driven (a streamed response)."""

from __future__ import annotations

from typing import Protocol

from domain.run import Run


class Live(Protocol):
    """Who follows a run while it is driven (``RunLifecycle.drive``). The loop then also
    commits just before each model turn, so that what came before it (the run's start, a
    tool's outcome) is committed, and can be sent, at once rather than with the model's
    answer: the same events, in more transactions. It is told, as they happen, of what
    is not recorded as events (from the thread that asks the model)."""

    def model_started(self, run: Run, model: str, provider: str) -> None:
        """The model is being asked; its answer will be the run's next event (version
        ``run.version + 1``)."""

    def model_text(self, run: Run, delta: str) -> None:
        """A piece of the answer's text as it comes (the whole text is recorded with
        the answer)."""
