"""OpenTelemetry traces: off unless ``SIGNOFF_TRACES`` is set.

- ``otlp``: spans go to an OpenTelemetry collector over OTLP/HTTP (the standard
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS`` ... apply);
- ``console``: one JSON object per span on stderr (for a look, and for the tests).

Spans: each HTTP request (``opentelemetry-instrumentation-asgi``), each model call
(``signoff.model``), each tool execution (``signoff.tool``) and each save
(``signoff.save``), with the run id as ``signoff.run_id`` wherever one is known. With
traces off, the OpenTelemetry API's no-op tracer costs about a microsecond a span.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

from domain.run import Run
from service import logs

tracer = trace.get_tracer("signoff")
_configured = False


def configure(mode: str) -> bool:
    """Install the tracer provider for ``mode`` ('' = off). Returns whether traces are on."""
    global _configured
    if not mode or _configured:
        return _configured
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": "signoff"}))
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        exporter = ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def run_id_now() -> str | None:
    """The run the work in progress is about (the log context's), if known."""
    ctx = logs.CONTEXT.get()
    return ctx.fields().get("run_id") if ctx is not None else None


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    attrs = {f"signoff.{k}": v for k, v in attributes.items() if v is not None}
    run_id = attrs.get("signoff.run_id") or run_id_now()
    if run_id:
        attrs["signoff.run_id"] = run_id
    with tracer.start_as_current_span(name, attributes=attrs) as current:
        yield current


_OUTCOMES: dict[type, str] = {Run.ToolExecuted: "ok", Run.ToolFailed: "error",
                              Run.ToolCallInDoubt: "in_doubt"}


def _ns(when: Any) -> int:
    return int(when.timestamp() * 1e9)


def record_commit(objs: Any, recordings: Any) -> None:
    """``RunService.on_commit`` listener: a ``signoff.tool`` span for each tool call whose
    outcome was just committed, from its recorded start to its recorded outcome (the
    times in the events, so the span is what the record says)."""
    runs = {getattr(o, "id", None): o for o in objs}
    for recording in recordings:
        event = recording.domain_event
        outcome = _OUTCOMES.get(type(event))
        run = runs.get(event.originator_id)
        if outcome is None or run is None:
            continue
        call = run.calls.get(event.tool_call_id)
        if call is None or call.started_at is None:
            continue
        s = tracer.start_span("signoff.tool", start_time=_ns(call.started_at), attributes={
            "signoff.run_id": str(event.originator_id), "signoff.agent": run.agent_id,
            "signoff.tool": call.tool_name, "signoff.outcome": outcome,
            "signoff.attempt": call.attempts})
        s.end(end_time=_ns(event.timestamp))


def name_request(method: str, route: str, run_id: str | None) -> None:
    """Name the request's span by its route template (not the raw path, which holds ids)
    and give it the run id, once the request is routed."""
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)
        if run_id:
            current.set_attribute("signoff.run_id", run_id)
