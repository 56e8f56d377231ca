"""What every read model is: a class with one method per event class it handles, over a
view of its own tables (``projections/store.py``: one implementation per database).

A read model is applied a page of events at a time, in one transaction with the page's
tracking position (``ViewMixin.write``). ``write_page`` opens a ``Page`` (the
transaction's cursor, and what the read model keeps for the rest of the page), passes
each event to ``process_event``, and closes the page. ``process_event`` is a
``singledispatchmethod``: a read model registers one method per event class it handles,
and an event of any other class changes nothing.

To add a read model: subclass ``ReadModel`` with its ``name``, its tables
(``create_statements``, and ``tables_in_order``: what a rebuild empties), its event
methods and the queries that read it, and list it in ``projections/runner.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from projections.sql import Cursor, Dialect


@dataclass
class Page:
    """One page's transaction: its cursor, and the log position of the event being
    applied."""

    c: Cursor
    position: int = 0


P = TypeVar("P", bound=Page)


class ReadModel(Generic[P]):
    name: ClassVar[str]
    # Written in each save's own transaction by the server that saves
    # (``projections/inline.py``), or only by its follower.
    inline: ClassVar[bool] = True
    tables_in_order: ClassVar[tuple[str, ...]] = ()  # what a rebuild empties, in order
    # Exact counters (``projections/store.py``): the table, and each counter's recount.
    counts_table: ClassVar[str] = ""
    counts: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        """The DDL of the read model's tables and indexes (``IF NOT EXISTS``)."""
        raise NotImplementedError

    def begin(self, c: Cursor) -> P:
        """The page a transaction opens (a read model that keeps more than the cursor
        while a page is applied returns a ``Page`` of its own)."""
        return cast(P, Page(c))

    def end(self, page: P) -> None:
        """What the read model writes once a page's events are applied."""

    def write_page(self, c: Cursor, events: Sequence[tuple[int, Any]]) -> None:
        page = self.begin(c)
        handler = self._handler
        for position, event in events:
            page.position = position
            handler(type(event))(self, event, page)
        self.end(page)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The method ``process_event`` registered for an event class, found through the
        # ``singledispatchmethod``'s own dispatcher (and its cache): getting the method
        # from an instance would build a new function on each event.
        method = inspect.getattr_static(cls, "process_event")
        dispatcher = getattr(method, "dispatcher", None)
        if dispatcher is not None:
            cls._handler = staticmethod(dispatcher.dispatch)

    @staticmethod
    def _handler(kind: type) -> Callable[..., None]:
        return lambda self, event, page: self.process_event(event, page)

    def process_event(self, event: Any, page: P) -> None:
        """What ``event`` changes. Each read model defines it as a
        ``singledispatchmethod`` with one registered method per event class it handles;
        an event of any other class changes nothing."""
        raise NotImplementedError
