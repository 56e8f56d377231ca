"""Fuzzing the API with schemathesis, over real HTTP, against its own OpenAPI document.

A real ``signoff serve`` (SQLite, and PostgreSQL) is seeded with runs in every state
(paused on each kind of decision, completed, cancelled). Then every operation of the
document served at ``/openapi.json`` gets:

* schema-driven requests, valid and invalid (schemathesis' positive and negative modes),
  half of them on a seeded run and its agent, so that they reach a run rather than a
  trivial 404, some changed one way: real tool calls with fuzzed decisions in ``tools``,
  an edge value in a query parameter or a body field, a raw body under an odd media type;
* a sweep of edge values no generator sends reliably: every query parameter and body
  field with numbers past 64 bits, NaN, NUL, times at the ends of the datetime range and
  the like; every JSON body field with text UTF-8 cannot encode (lone surrogates); every
  header with numbers past 64 bits and the like; every raw body under every media type;
  every kind of decision carrying NaN, Infinity, deeply nested values or lone surrogates,
  each on a freshly paused run, followed by reading that run back every way the API
  shows it.

Every response must:

* never be a 5xx;
* match the document: a declared status, its media type and its schema (and invalid
  input is refused);
* if 4xx, be an RFC 9457 problem (``application/problem+json``; type, title, status,
  detail), and record nothing (the event log's head has not moved).

A body over the size limit is a 413 problem on every operation that takes one.

Afterwards the event store still replays and verifies: every run's versions are 1..N,
every run rebuilds (``RunService.get_run``), the seeded runs' histories were only ever
appended to (those that had ended are unchanged), every hash chain and anchor holds
(``service.audit.verify_log``, and ``GET /audit/verify`` against the anchors the
projection kept while the fuzzer ran), and the server logged no unexpected error.
Bounded and deterministic:
Hypothesis is derandomized with a fixed number of examples per operation, and the sweeps
are fixed lists.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    CheckContext,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from api.routes.agno import ContinueRunForm, StartRunForm
from api.routes.runs import CancelRequest
from service import audit
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.e2e.flows import (
    PROBLEM,
    SESSION,
    assert_problem,
    continue_,
    decided,
    events,
    pending,
    post_continue,
    post_start,
    start,
)
from tests.e2e.sse import parse
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

Json = dict[str, Any]

MAX_EXAMPLES = 25  # per operation and store; twice that for starts and continues
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

# Every operation of the document, in the order they are fuzzed: reads first, the
# cancels last (a cancel ends a paused seed, after which nothing can continue it).
OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/agents"),
    ("GET", "/agents/{agent_id}"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/runs/{run_id}/events"),
    ("GET", "/agents/{agent_id}/runs/{run_id}"),
    ("POST", "/agents/{agent_id}/runs"),
    ("POST", "/agents/{agent_id}/runs/{run_id}/continue"),
    ("POST", "/agents/{agent_id}/runs/{run_id}/cancel"),
    ("POST", "/runs/{run_id}/cancel"),
    ("GET", "/queue"),
    ("GET", "/audit/decisions"),
    ("GET", "/analytics/decisions"),
    ("GET", "/analytics/queue"),
    ("GET", "/projections"),
]
# The operations with a query parameter or a body (the document test checks this list).
EDGE_OPERATIONS = [
    ("GET", "/runs/{run_id}"),
    ("GET", "/queue"),
    ("GET", "/audit/decisions"),
    ("GET", "/analytics/decisions"),
    ("GET", "/analytics/queue"),
    ("POST", "/agents/{agent_id}/runs"),
    ("POST", "/agents/{agent_id}/runs/{run_id}/continue"),
    ("POST", "/runs/{run_id}/cancel"),
]
BODY_MODELS: dict[str, Any] = {
    "/agents/{agent_id}/runs": StartRunForm,
    "/agents/{agent_id}/runs/{run_id}/continue": ContinueRunForm,
    "/runs/{run_id}/cancel": CancelRequest,
}

# Invalid data is rejected with any of these: schemathesis' own list, and 413 (a string
# past its maxLength may make the body larger than SIGNOFF_MAX_BODY_BYTES).
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                          "428", "429", "5xx"]}}})
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]

# The seeded runs: (agent, message, what is done with it). The offline model proposes
# what docs/offline-model.md says, so each lands in a known state.
SEEDS = [
    ("data_manager", "Delete 50 old records from the users table", "leave"),  # confirmation
    ("data_manager", "Delete 7 records from table orders", "leave"),
    ("data_manager", "Delete 3 records from table logs", "reject"),  # -> COMPLETED
    ("data_manager", "Delete 9 records from table audit", "cancel"),  # -> CANCELLED
    ("support_desk", "check payment for order 77", "leave"),  # external execution
    ("support_desk", "Issue a refund of 30 for order A17", "leave"),  # user input
    ("support_desk", "What can you do?", "leave"),  # no tool matches: COMPLETED at once
    ("gatekeeper", "Delete table stale", "leave"),  # confirm_before_run
    ("ops", 'call transfer_money {"account": "acc-1", "amount": 5}', "leave"),  # no edits
    ("ops", 'call failing_tool {"name": "x"}', "leave"),  # the tool fails, the run ends
]
FINAL = ("COMPLETED", "CANCELLED", "FAILED")


@dataclass
class Seed:
    agent_id: str
    run_id: str
    status: str
    call_ids: list[str]
    history: list[Json]  # GET /runs/{id}/events right after seeding
    webhook_id: str = ""  # a subscription to every event (to a closed port on 127.0.0.1)


@dataclass
class Target:
    server: LiveServer
    schema: Any
    seeds: list[Seed]
    # One keep-alive client of each kind for the module (a client per test costs a TLS
    # context each): httpx for our own requests, requests for schemathesis'.
    http: httpx.Client
    session: requests.Session = field(default_factory=requests.Session)
    head: int | None = None  # the event log's head after the last request sent by _send
    log_from: int = 0  # where the server's log stood when the current test started

    def client(self) -> contextlib.nullcontext[httpx.Client]:
        return contextlib.nullcontext(self.http)

    def seed(self, *, final: bool) -> Seed:
        return next(s for s in self.seeds if (s.status in FINAL) == final and s.call_ids)


def _seed(c: httpx.Client) -> list[Seed]:
    seeds = []
    r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})  # nothing listens
    assert r.status_code == 201, r.text
    webhook_id = r.json()["webhook"]["id"]
    for agent_id, message, then in SEEDS:
        run = start(c, agent_id, message)
        if then == "reject":
            run = continue_(c, run, [decided(t, confirmed=False, confirmation_note="no")
                                     for t in pending(run)])
        elif then == "cancel":
            r = c.post(f"/runs/{run['run_id']}/cancel", json={"reason": "seeded"})
            assert r.status_code == 200, r.text
            run = c.get(f"/agents/{agent_id}/runs/{run['run_id']}").json()
        seeds.append(Seed(agent_id, run["run_id"], run["status"],
                          [t["tool_call_id"] for t in run["tools"]],
                          events(c, run["run_id"]), webhook_id))
    assert {s.status for s in seeds} >= {"PAUSED", "COMPLETED", "CANCELLED"}
    return seeds


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A seeded ``signoff serve`` and its OpenAPI document, loaded over HTTP."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp / 'signoff.db'}"
        else:
            db = request.getfixturevalue("pg_server").create_database(
                f"fuzz_{uuid.uuid4().hex[:12]}")
            stack.callback(_drop_quietly, db)
            url = str(db.url)
        # Authentication off: the fuzzer issues keys (POST /keys), which would otherwise
        # turn it on mid-run (tests/e2e/test_roles.py covers every route with keys).
        # Webhooks the fuzzer subscribes may only name this machine (nothing is sent off it).
        server = stack.enter_context(live_server(url, tmp / "server.log", SIGNOFF_AUTH="off",
                                                 SIGNOFF_WEBHOOK_HOSTS="127.0.0.1"))
        with server.client(verify=False) as c:
            seeds = _seed(c)
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=CONFIG)
        http = stack.enter_context(server.client(verify=False))  # plain HTTP to 127.0.0.1
        target = Target(server, schema, seeds, http)
        stack.callback(target.session.close)
        yield target


@pytest.fixture(autouse=True)
def _each_test(target: Target) -> None:
    """Each test reads the event log's head afresh (see ``_send``), and checks only what
    the server logged while it ran (so one failure does not fail the tests after it)."""
    target.head = None
    target.log_from = target.server.log_path.stat().st_size


def _drop_quietly(db: Any) -> None:
    with contextlib.suppress(psycopg.OperationalError):
        db.drop_database()


# ------------------------------------------------------------------ checks

def problem_details(ctx: CheckContext, response: schemathesis.Response,
                    case: schemathesis.Case) -> bool | None:
    """Every 4xx and 5xx is an RFC 9457 problem with the status it was sent with."""
    if response.status_code < 400:
        return None
    ctype = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    assert ctype == PROBLEM, f"{response.status_code} sent as {ctype!r}, not {PROBLEM}"
    body = response.json()
    assert isinstance(body, dict), body
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == response.status_code, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    return True


def _head(c: httpx.Client) -> int:
    r = c.get("/health")
    assert r.status_code == 200, r.text
    head: int = r.json()["log_head"]
    return head


def _send(target: Target, client: httpx.Client, case: Any,
          raw: tuple[str, bytes] | None = None) -> Any:
    """Send ``case`` (or, with ``raw``, its method and URL with this media type and body)
    and check the response: the checks above, and nothing recorded on a 4xx.

    The log's head after the last request is kept (``target.head``): whoever writes to
    the store other than through here sets it to None.
    """
    head = target.head if target.head is not None else _head(client)
    if raw is None and case.path.endswith("/stream"):
        # A stream that is accepted stays open (until its run ends, or for ever for the
        # queue's): its status and media type are what can be checked, then it is
        # closed; any other answer is read whole and checked like every other.
        with client.stream(case.method, case.formatted_path, params=case.query,
                           headers=case.headers) as response:
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("text/event-stream")
                target.head = _head(client)
                return response
            response.read()
    elif raw is None:
        response: Any = case.call(session=target.session, timeout=30)
    else:
        headers = {"content-type": raw[0]} if raw[0] else {}
        response = client.request(case.method, case.formatted_path, params=case.query,
                                  headers=headers, content=raw[1])
    target.head = None
    # A raw body replaces the generated one: whether that was valid says nothing of it.
    checks = CHECKS if raw is None else [c for c in CHECKS if c is not negative_data_rejection]
    case.validate_response(response, checks=checks, additional_checks=[problem_details])
    target.head = _head(client)
    if 400 <= response.status_code < 500:
        assert target.head == head, f"a {response.status_code} recorded events"
    return response


def _assert_clean_log(target: Target, since: int | None = None) -> None:
    """The server logged no traceback or unexpected error (since the test started)."""
    with target.server.log_path.open("rb") as f:
        f.seek(target.log_from if since is None else since)
        log = f.read().decode(errors="replace")
    found = [i for i in (log.find("unexpected error"), log.find("Traceback")) if i >= 0]
    assert not found, "the server logged an error:\n" + log[max(0, min(found) - 200):][:6000]


# ------------------------------------------------------------------ values

def nested(levels: int, leaf: Any = "x") -> Any:
    for i in range(levels):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


# JSON values as a client may send them.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
# Text UTF-8 cannot encode: lone surrogates (a pair of them is one character, and fine).
# Only JSON carries them (as its \udXXX escapes); a client cannot encode them into a form
# or a URL.
LONE = ["\ud800", "a\udfffb"]
UNENCODABLE = st.builds(lambda head, code, tail: f"{head}{chr(code)}{tail}",
                        st.text(max_size=4), st.integers(0xD800, 0xDFFF), st.text(max_size=4))
# What Python's json reads but JSON does not allow, what nests deeper than any tool needs
# (and deeper than a response can be serialized), and text UTF-8 cannot encode.
ODD = [math.nan, -math.inf, nested(40), nested(300), 10**40, 1e308, "\x00", {}, *LONE]
ODD_VALUES = st.sampled_from(ODD) | UNENCODABLE

# Values schemathesis seldom sends: past 64 bits, not numbers, empty, control characters,
# the ends of the datetime range (also in the zones furthest east and west: a year-1 time
# at +14:00 is in year 0 in UTC, a year-9999 one at -14:00 in year 10000).
EDGE = [-1, 2**63, 10**30, "1e999", "NaN", "", "\x00", "0x10", "true", "[]", "é", "9" * 400,
        "0001-01-01T00:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999",
        "9999-12-31T23:59:59.999999-14:00"]
# The same for headers (printable ASCII only: a client sends nothing else).
EDGE_HEADERS = ["-1", "0", str(2**62), str(2**63), str(2**64), "9" * 40, "1e999", "NaN", "",
                "0x10", "1.5", "true"]

# Bodies sent as raw bytes under a media type of their own (or none).
RAW_CONTENT_TYPES = [
    "APPLICATION/JSON; charset=latin-1", "application/x-www-form-urlencoded",
    "multipart/form-data", "multipart/form-data; boundary=x",
    "multipart/form-data; boundary=x; charset=utf-7", "",
]
RAW_BODIES = [
    b"", b"\xff\xfe\xfd", b"null", b"[]", b"42", b'"text"', b"{", b"{}",
    b'{"message": NaN}', b'{"message": "x", "stream": false}', b'{"tools": "[]"}',
    b'{"tools": "[{\\"tool_call_id\\": \\"x\\", \\"confirmed\\": NaN}]"}',
    b'{"message": "\\ud800", "stream": false}', b"[" * 5000, b'{"reason": 1e999}',
    b"message=%FF%FE&stream=false", b"message=x&stream=maybe", b"tools=%5B%5D",
    b'--x\r\nContent-Disposition: form-data; name="message"\r\n\r\n\xff\r\n--x--\r\n',
    b'--x\r\nContent-Disposition: form-data; name="message"; filename="a.txt"\r\n\r\n'
    b"hi\r\n--x--\r\n",
    # Lone surrogates: in a JSON body, in the tools field's JSON, in a UTF-7 form field.
    b'{"reason": "\\udfff", "actor": "a"}',
    b'{"name": "k", "role": "reviewer", "agents": ["a\\ud800"]}',
    b'{"url": "http://127.0.0.1:9/h", "\\udc00": 1}',
    b'{"tools": "[{\\"tool_call_id\\": \\"x\\", \\"n\\": \\"\\\\ud800\\"}]"}',
    b"tools=%5B%7B%22tool_call_id%22%3A%22x%22%2C%22n%22%3A%22%5Cud800%22%7D%5D",
    b'--x\r\nContent-Disposition: form-data; name="message"\r\n\r\n+2AA-\r\n--x--\r\n',
]

# A run paused on each kind of decision, and decisions carrying an odd value.
PAUSED_ON = {
    "confirmation": ("data_manager", "Delete 50 old records from the users table"),
    "external": ("support_desk", "check payment for order 77"),
    "user input": ("support_desk", "Issue a refund of 30 for order A17"),
}
DECISIONS: list[tuple[str, Any]] = [
    ("confirmation", lambda v: {"confirmed": True, "tool_args": {"table_name": v}}),
    ("confirmation", lambda v: {"confirmed": True, "tool_args": {"table_name": "t", "count": v}}),
    ("confirmation", lambda v: {"confirmed": False, "confirmation_note": v}),
    ("confirmation", lambda v: {"confirmed": v}),
    ("external", lambda v: {"result": v}),
    ("user input", lambda v: {"user_input_schema": [{"name": "email", "value": v}]}),
]


# ------------------------------------------------------------- the fuzzer

def _tools_item(seed: Seed, values: st.SearchStrategy[Any],
                names: st.SearchStrategy[str]) -> st.SearchStrategy[Json]:
    """One Agno tool execution naming one of the run's calls, with a fuzzed decision."""
    call_ids = st.sampled_from(seed.call_ids) if seed.call_ids else st.text(max_size=10)
    return st.fixed_dictionaries(
        {"tool_call_id": call_ids | st.text(max_size=10),
         "confirmed": st.booleans() | st.none() | values},
        optional={
            "confirmation_note": st.text(max_size=30) | values,
            "result": st.text(max_size=30) | values,
            "tool_args": st.dictionaries(
                st.sampled_from(["table_name", "count", "account", "amount", "name"])
                | names, values, max_size=3) | values,
            "user_input_schema": st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["email", "order_id", "amount"]) | values},
                optional={"value": values}), max_size=3) | values,
        })


def _operations(target: Target) -> list[Any]:
    return [result.ok() for result in target.schema.get_all_operations()]


NO_APPROVAL = "00000000-0000-5000-8000-000000000000"


def _known_params(op: Any, agent_id: str, run_id: str, webhook_id: str = "") -> dict[str, str]:
    """The path parameters of ``op`` naming this agent and run (and webhook); a key's id
    names the run (the same store holds keys, runs and webhooks: a run is no key, 404);
    the session is the seeds' own; an approval id names none (404)."""
    names = {p.name for p in op.path_parameters}
    return {k: v for k, v in (("agent_id", agent_id), ("run_id", run_id),
                              ("webhook_id", webhook_id), ("key_id", run_id),
                              ("session_id", SESSION), ("approval_id", NO_APPROVAL))
            if k in names}


def _fuzz(target: Target, op: Any, client: httpx.Client, examples: int = MAX_EXAMPLES,
          ) -> Counter[str]:
    """Fuzz one operation; returns how many requests on a seeded run found it, or not."""
    has_path_params = len(op.path_parameters) > 0
    query_names = [p.name for p in op.query]
    has_body = len(op.body) > 0
    anything = st.one_of([op.as_strategy(mode) for mode in MODES])
    known = st.one_of([
        st.tuples(st.just(seed), op.as_strategy(
            mode, path_parameters=_known_params(op, seed.agent_id, seed.run_id, seed.webhook_id)))
        for seed in target.seeds for mode in MODES
        # Fixed path parameters leave nothing to negate on an operation with no others.
        if mode is GenerationMode.POSITIVE or query_names or len(op.headers) or has_body
    ]) if has_path_params else st.nothing()
    variants = ["as generated"]
    variants += ["edge query"] if query_names else []
    variants += ["edge field", "raw body"] if has_body else []
    # (on a seeded run?, variant): seeded first, as Hypothesis starts from the first plans.
    plans = [(True, "real tool calls")] * 3 if op.path.endswith("/continue") else []
    plans += [(True, v) for v in variants] if has_path_params else []
    plans += [(False, v) for v in variants]
    examples *= 2 if op.path.endswith(("/runs", "/continue")) else 1
    hits: Counter[str] = Counter()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        seeded, variant = data.draw(st.sampled_from(plans), label="plan")
        seed = None
        if seeded:
            seed, case = data.draw(known, label="case")
        else:
            case = data.draw(anything, label="case")
        raw: tuple[str, bytes] | None = None
        if variant == "real tool calls" and seed is not None:
            odd = data.draw(st.integers(0, 3), label="odd values") == 0
            values = JSON_VALUES | ODD_VALUES if odd else JSON_VALUES
            names = st.text(max_size=8) | UNENCODABLE if odd else st.text(max_size=8)
            tools = data.draw(st.lists(_tools_item(seed, values, names), min_size=1,
                                       max_size=3), label="tools")
            body = case.body if isinstance(case.body, dict) else {}
            case.body = {**body, "tools": json.dumps(tools)}
        elif variant == "edge query":
            name = data.draw(st.sampled_from(query_names), label="query parameter")
            case.query = {**(case.query or {}), name: data.draw(st.sampled_from(EDGE))}
        elif variant == "edge field" and isinstance(case.body, dict):
            name = data.draw(st.sampled_from(
                ["message", "tools", "stream", "session_id", "user_id", "reason", "actor"]),
                label="field")
            edge = st.sampled_from(EDGE) | JSON_VALUES
            if case.media_type == "application/json":  # a form cannot carry them
                edge |= UNENCODABLE
            value = data.draw(edge, label="value")
            case.body = {**case.body, name: value}
        elif variant == "raw body":
            raw = (data.draw(st.sampled_from(RAW_CONTENT_TYPES), label="content type"),
                   data.draw(st.sampled_from(RAW_BODIES) | st.binary(max_size=64),
                             label="raw body"))
        response = _send(target, client, case, raw)
        if seed is not None:
            hits["not found" if response.status_code == 404 else "found"] += 1

    run()
    return hits


# ------------------------------------------------------------------ tests

def test_the_document_describes_every_error_as_a_problem(target: Target) -> None:
    """The document has every operation listed above (the others are fuzzed by
    ``test_fuzz_operations_not_listed``), and describes errors as they are sent
    (problems), not as FastAPI's default validation error."""
    ops = [op for op in _operations(target) if (op.method.upper(), op.path) in OPERATIONS]
    assert {(op.method.upper(), op.path) for op in ops} == set(OPERATIONS)
    assert {(op.method.upper(), op.path) for op in ops
            if len(op.query) or len(op.body)} == set(EDGE_OPERATIONS)
    assert {path for _, path in EDGE_OPERATIONS if any(len(op.body) for op in ops
            if op.path == path)} == set(BODY_MODELS)
    doc = target.http.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc)
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert list(response["content"]) == [PROBLEM], (method, path, status)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[" ".join(o) for o in OPERATIONS])
def test_fuzz(target: Target, method: str, path: str) -> None:
    with target.client() as client:
        hits = _fuzz(target, target.schema[path][method], client)
    if "{agent_id}" in path or "{run_id}" in path:
        # Requests on seeded runs got past the lookup (not all a trivial 404).
        assert hits["found"] >= 3, hits
    _assert_clean_log(target)


@pytest.mark.parametrize(("method", "path"), EDGE_OPERATIONS,
                         ids=[" ".join(o) for o in EDGE_OPERATIONS])
def test_edge_values(target: Target, method: str, path: str) -> None:
    """Every query parameter and body field with every edge value, and every raw body under
    every media type, on a seeded run (one that has ended, for the cancels)."""
    op = target.schema[path][method]
    seed = target.seed(final=path.endswith("/cancel"))
    params = _known_params(op, seed.agent_id, seed.run_id, seed.webhook_id)
    fields = set(BODY_MODELS[path].model_fields) if path in BODY_MODELS else set()
    media_types = sorted({b.media_type for b in op.body})
    minimal = {"message": "hi", "tools": "[]", "stream": False}
    minimal = {k: v for k, v in minimal.items() if k in fields}
    with target.client() as client:
        for name in (p.name for p in op.query):
            for value in EDGE:
                _send(target, client, op.Case(path_parameters=params, query={name: value}))
        for name in sorted(fields):
            for i, value in enumerate(EDGE):  # as a form and as JSON, by turns
                _send(target, client, op.Case(path_parameters=params, body={**minimal, name: value},
                                              media_type=media_types[i % len(media_types)]))
            for value in LONE:  # as JSON only: a form cannot carry them
                r = _send(target, client, op.Case(path_parameters=params,
                                                  body={**minimal, name: value},
                                                  media_type="application/json"))
                assert r.status_code == 422, (name, r.status_code, r.text)
        if fields:
            for content_type in RAW_CONTENT_TYPES:
                for body in RAW_BODIES:
                    _send(target, client, op.Case(path_parameters=params), (content_type, body))
    _assert_clean_log(target)


def test_fuzz_operations_not_listed(target: Target) -> None:
    """Routes added after OPERATIONS was written are fuzzed too (list them above for a test
    of their own): schema-driven requests, then every query parameter with every edge
    value, every header with every edge header value and, if they take a body, every raw
    body under every media type."""
    others = [op for op in _operations(target) if (op.method.upper(), op.path) not in OPERATIONS]
    if not others:
        pytest.skip("every operation of the document is listed in OPERATIONS")
    seed = target.seed(final=True)
    with target.client() as client:
        for op in sorted(others, key=lambda op: op.method.upper() != "GET"):
            _fuzz(target, op, client, examples=MAX_EXAMPLES // 2)
            params = _known_params(op, seed.agent_id, seed.run_id, seed.webhook_id)
            for name in (p.name for p in op.query):
                for value in EDGE:
                    _send(target, client, op.Case(path_parameters=params, query={name: value}))
            for name in (h.name for h in op.headers):
                for header in EDGE_HEADERS:
                    _send(target, client, op.Case(path_parameters=params,
                                                  headers={name: header}))
            if len(op.body):
                for content_type in RAW_CONTENT_TYPES:
                    for body in RAW_BODIES:
                        _send(target, client, op.Case(path_parameters=params),
                              (content_type, body))
    _assert_clean_log(target)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_decisions_with_odd_values(target: Target, stream: bool) -> None:
    """Each kind of decision carrying NaN, Infinity, huge or deeply nested values, on a
    freshly paused run: refused or recorded, and the run can be read back every way."""
    schema = target.schema
    cont = schema["/agents/{agent_id}/runs/{run_id}/continue"]["POST"]
    reads = [schema[p]["GET"] for p in
             ("/runs/{run_id}", "/runs/{run_id}/events", "/agents/{agent_id}/runs/{run_id}")]
    with target.client() as client:
        for kind, make in DECISIONS:
            for value in ODD[stream::2]:  # half the values as JSON, half as a stream
                agent_id, message = PAUSED_ON[kind]
                run = start(client, agent_id, message)
                target.head = None
                [tool] = pending(run)
                tools = json.dumps([decided(tool, **make(value))])  # NaN as JSON's NaN
                params = {"agent_id": agent_id, "run_id": run["run_id"]}
                body = {"tools": tools} if stream else {"tools": tools, "stream": False}
                r = _send(target, client, cont.Case(path_parameters=params, body=body,
                                                    media_type="multipart/form-data"))
                if r.status_code == 200:
                    _assert_strict_json(r)
                for read in reads:
                    params = _known_params(read, agent_id, run["run_id"])
                    r = _send(target, client, read.Case(path_parameters=params))
                    assert r.status_code == 200, r.text
                    _assert_strict_json(r)
    _assert_clean_log(target)


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _assert_strict_json(r: Any) -> None:
    """The body is RFC 8259 JSON (no NaN or Infinity), also each event of a stream."""
    ctype = r.headers.get("content-type")
    ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis' or httpx's
    if ctype.startswith("text/event-stream"):
        for name, data in parse(r.text):
            assert isinstance(data, dict), (name, data)
        for line in r.text.splitlines():
            if line.startswith("data:"):
                _strict(line[len("data:"):])
    else:
        _strict(r.text)


# ---------------------------------------------- regressions the fuzzer found

def test_at_version_beyond_64_bits_is_422(target: Target) -> None:
    """Was a 500: the number reached the database, which cannot hold it (SQLite:
    OverflowError)."""
    seed = target.seed(final=False)
    with target.client() as c:
        for version in (2**63, 10**30):
            assert_problem(c.get(f"/runs/{seed.run_id}", params={"at_version": version}), 422)
        # The largest version the store can hold: asked for, not had (the run has fewer
        # events), so 404 rather than the run as it is now.
        assert_problem(c.get(f"/runs/{seed.run_id}", params={"at_version": 2**63 - 1}), 404)
    _assert_clean_log(target)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_tools_is_400_and_records_nothing(target: Target, constant: str) -> None:
    """Was recorded, and then the run's JSON response failed (a 500): Python's json reads
    NaN and Infinity, JSON has no such numbers."""
    with target.client() as c:
        run = start(c, "data_manager", "Delete 50 old records from the users table")
        [tool] = pending(run)
        tools = json.dumps([decided(tool, confirmed=True, tool_args={"table_name": "t"})])
        tools = tools.replace('"t"', constant)
        head = _head(c)
        body = assert_problem(post_continue(c, "data_manager", run["run_id"], tools=tools,
                                            stream="false"), 400)
        assert body["detail"] == "'tools' is not valid JSON"
        assert _head(c) == head
        assert c.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"
    _assert_clean_log(target)


def test_deeply_nested_tools_are_422_and_record_nothing(target: Target) -> None:
    """Was recorded, and then every read of the run failed (a 500): pydantic serializes
    at most ~250 levels."""
    with target.client() as c:
        run = start(c, "data_manager", "Delete 50 old records from the users table")
        [tool] = pending(run)
        tools = [decided(tool, confirmed=True, tool_args={"table_name": nested(300)})]
        head = _head(c)
        body = assert_problem(post_continue(c, "data_manager", run["run_id"], tools=tools,
                                            stream="false"), 422)
        assert "levels deep" in body["detail"]
        assert _head(c) == head
        # 32 levels in all are accepted (the list and the item are two of them).
        run = start(c, "support_desk", "check payment for order 77")
        [tool] = pending(run)
        tools = [decided(tool, result=nested(30))]
        r = post_continue(c, "support_desk", run["run_id"], tools=tools, stream="false")
        assert r.status_code == 200, r.text
        assert c.get(f"/runs/{run['run_id']}").status_code == 200
    _assert_clean_log(target)


@pytest.mark.parametrize("stream", ["false", None], ids=["json", "sse"])
def test_a_non_finite_number_in_a_run_is_sent_as_null(target: Target,
                                                       stream: str | None) -> None:
    """Was a 500 after the run was recorded: the offline model reads ``1e999`` as Infinity
    (a Python literal), and the run's JSON response could not be encoded. A stream sent
    ``Infinity``, which is not JSON."""
    with target.client() as c:
        r = post_start(c, "support_desk", message="issue_refund(order_id='77', amount=1e999)",
                       stream=stream)
        assert r.status_code == 200, r.text
        _assert_strict_json(r)
    _assert_clean_log(target)


def test_an_unparsable_cancel_body_is_a_documented_400(target: Target) -> None:
    """FastAPI answers 400 for a body it cannot decode (invalid UTF-8); the document did
    not list it."""
    seed = target.seed(final=True)
    with target.client() as c:
        r = c.post(f"/runs/{seed.run_id}/cancel", content=b'{"reason": "\xff"}',
                   headers={"content-type": "application/json"})
        assert_problem(r, 400)
    doc = target.http.get("/openapi.json").json()
    assert "400" in doc["paths"]["/runs/{run_id}/cancel"]["post"]["responses"]
    _assert_clean_log(target)


def test_a_body_over_the_limit_is_a_documented_413(target: Target) -> None:
    """Every operation that takes a body refuses one over ``SIGNOFF_MAX_BODY_BYTES`` with a
    413 problem, declared in the document, recording nothing; whether it says its length
    or streams without one."""
    limit = Settings().max_body_bytes
    seed = target.seed(final=False)
    ops = [op for op in _operations(target) if len(op.body)]
    assert {op.path for op in ops} >= set(BODY_MODELS)
    with target.client() as client:
        for op in ops:
            params = _known_params(op, seed.agent_id, seed.run_id, seed.webhook_id)
            for content_type in ("application/json", "multipart/form-data; boundary=x"):
                r = _send(target, client, op.Case(path_parameters=params),
                          (content_type, b"x" * (limit + 1)))
                assert_problem(r, 413)
            head = _head(client)
            r = client.request(op.method, op.Case(path_parameters=params).formatted_path,
                               content=iter([b"{", b" " * limit, b"}"]),
                               headers={"content-type": "application/json"})
            assert_problem(r, 413)
            assert _head(client) == head
    _assert_clean_log(target)


# ------------------------------------------------------------- afterwards

def test_the_store_replays_after_fuzzing(target: Target) -> None:
    """Every run's versions are 1..N, it rebuilds, and seeded histories were only appended
    to: events are never altered or removed (those of ended runs are all unchanged).
    Last in the module: it checks what every test above left behind."""
    url = target.server.database_url
    store = RunService(env=eventsourcing_env(Settings(database_url=url)))
    try:
        versions: dict[uuid.UUID, list[int]] = {}
        runs: set[uuid.UUID] = set()
        last_id = 0
        for notification_id, event in store.log():
            assert notification_id > last_id
            last_id = notification_id
            versions.setdefault(event.originator_id, []).append(event.originator_version)
            if type(event).__name__ == "RunStarted":
                runs.add(event.originator_id)
        assert last_id == store.head()
        for run_id, seen in versions.items():
            assert seen == list(range(1, len(seen) + 1)), (run_id, seen)
            # Every aggregate rebuilds: runs, and the API keys the fuzzer issued.
            assert store.repository.get(run_id).version == len(seen)
        assert {uuid.UUID(s.run_id) for s in target.seeds} <= versions.keys()
        # Every run replays as a run.
        for run_id in runs:
            assert store.get_run(run_id).version == len(versions[run_id])
        # Every event's hash, every run's chain and the log's chain hold.
        report = audit.verify_log(store)
        assert report.intact, report.as_dict()
        assert report.runs == len(runs), report.as_dict()
        assert report.events == sum(len(seen) for seen in versions.values()), report.as_dict()
    finally:
        store.close()
    with target.client() as c:
        # The same over HTTP, also against the anchors the projection kept meanwhile.
        r = c.get("/audit/verify")
        assert r.status_code == 200, r.text
        assert r.json()["intact"] and r.json()["anchors_checked"] >= 1, r.json()
    with target.client() as c:
        for seed in target.seeds:
            after = events(c, seed.run_id)
            if seed.status in FINAL:
                assert after == seed.history, seed.run_id
            else:
                assert after[:len(seed.history)] == seed.history, seed.run_id
            r = c.get(f"/agents/{seed.agent_id}/runs/{seed.run_id}")
            assert r.status_code == 200, r.text
    _assert_clean_log(target, since=0)
