"""Bad input of every kind is a 4xx problem (RFC 9457), never a 5xx or a reset connection,
and records nothing: the event log's head (``GET /health``: ``log_head``) does not move.

* Text UTF-8 cannot encode (a lone surrogate, such as JSON's ``"\\ud800"``), wherever text
  enters: the ``tools`` field, any JSON body, a form field: 422. A surrogate *pair* is
  one character like any other, and is recorded.
* An id naming another kind of aggregate in the same store (an API key, a webhook) is no
  run, and a run's id is no key: 404.
* A JWT whose scope claims are not lists of strings, or whose subject is empty: 401.
* ``since`` / ``until`` at the ends of the datetime range, with and without a zone: the
  right answer.
* A ``Last-Event-ID`` that is no position the log can hold: 422 before any stream starts.
* A start message over ``SIGNOFF_MAX_MESSAGE_CHARS``: 413.

One server per module and store (SQLite, PostgreSQL), with authentication off so that
keys can be issued without turning it on; the JWT cases have a server of their own.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from service.config import Settings
from tests.e2e.flows import (
    assert_problem,
    continue_,
    decided,
    events,
    pending,
    post_continue,
    post_start,
    start,
)
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
DELETE = "Delete 50 old records from the users table"
JSON = {"content-type": "application/json"}
# Strings UTF-8 cannot encode: lone surrogates, high, low, and one amid other text.
LONE = ["\ud800", "\udfff", "a\udc80b"]
PAIR = "\ud83d\ude00"  # JSON's escape of U+1F600 as a surrogate pair: one character


def raw_json(value: Any) -> bytes:
    """``value`` as JSON with every non-ASCII character escaped, as most clients send it:
    a lone surrogate becomes ``\\udXXX`` (the body itself is plain ASCII)."""
    return json.dumps(value).encode()


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp: Path = tmp_path_factory.mktemp("bad_input")
    env = {"SIGNOFF_AUTH": "off", "SIGNOFF_WEBHOOK_HOSTS": "127.0.0.1"}
    if request.param == "sqlite":
        with live_server(f"sqlite:///{tmp / 'signoff.db'}", tmp / "server.log", **env) as s:
            yield s
        return
    db = request.getfixturevalue("pg_server").create_database(
        f"bad_input_{uuid.uuid4().hex[:12]}")
    try:
        with live_server(str(db.url), tmp / "server.log", **env) as s:
            yield s
    finally:
        with contextlib.suppress(psycopg.OperationalError):
            db.drop_database()


def _clean_log(server: LiveServer, since: int) -> None:
    """The server logged no traceback or unexpected error since ``since`` (a log offset)."""
    with server.log_path.open("rb") as f:
        f.seek(since)
        log = f.read().decode(errors="replace")
    assert "unexpected error" not in log and "Traceback" not in log, log[-6000:]


@pytest.fixture
def c(shared_server: LiveServer) -> Iterator[httpx.Client]:
    offset = shared_server.log_path.stat().st_size
    with shared_server.client() as client:
        yield client
    _clean_log(shared_server, offset)


@pytest.fixture
def paused(c: httpx.Client) -> Json:
    run = start(c, "data_manager", DELETE)
    assert run["status"] == "PAUSED"
    return run


def head(c: httpx.Client) -> int:
    r = c.get("/health")
    assert r.status_code == 200, r.text
    log_head: int = r.json()["log_head"]
    return log_head


@contextlib.contextmanager
def unchanged(c: httpx.Client, run_id: str | None = None) -> Iterator[None]:
    """Nothing is recorded inside the block: the log's head (and the run's events) stay."""
    before = head(c)
    history = events(c, run_id) if run_id else None
    yield
    assert head(c) == before
    if run_id:
        assert events(c, run_id) == history


# ------------------------------------------------ text UTF-8 cannot encode

# A decision on a paused call carrying a lone surrogate somewhere: (agent, message, make).
SURROGATE_DECISIONS: dict[str, tuple[str, str, Callable[[Json, str], Json]]] = {
    "note": ("data_manager", DELETE,
             lambda t, s: decided(t, confirmed=False, confirmation_note=s)),
    "edited argument": ("data_manager", DELETE, lambda t, s: decided(
        t, confirmed=True, tool_args={"table_name": s, "count": 50})),
    "argument name": ("data_manager", DELETE,
                      lambda t, s: decided(t, confirmed=True, tool_args={s: "users"})),
    "member no one reads": ("data_manager", DELETE,
                            lambda t, s: decided(t, confirmed=True, comment=[{"x": s}])),
    "tool_call_id": ("data_manager", DELETE, lambda t, s: {"tool_call_id": s,
                                                           "confirmed": True}),
    "external result": ("support_desk", "check payment for order 77",
                        lambda t, s: decided(t, result=s)),
    "user input": ("support_desk", "Issue a refund of 30 for order A17",
                   lambda t, s: decided(t, user_input_schema=[{"name": "email", "value": s}])),
}


@pytest.mark.parametrize("stream", [None, "false"], ids=["sse", "json"])
@pytest.mark.parametrize("case", list(SURROGATE_DECISIONS))
def test_a_lone_surrogate_in_tools_is_422(c: httpx.Client, case: str,
                                           stream: str | None) -> None:
    agent, message, make = SURROGATE_DECISIONS[case]
    run = start(c, agent, message)
    [tool] = pending(run)
    url = f"/agents/{agent}/runs/{run['run_id']}/continue"
    with unchanged(c, run["run_id"]):
        for lone in LONE:
            tools = json.dumps([make(tool, lone)])  # the surrogate as JSON's \udXXX escape
            assert_problem(post_continue(c, agent, run["run_id"], tools=tools, stream=stream),
                           422)
            # The same as a JSON body: the tools string escaped once more.
            body = {"tools": tools} if stream is None else {"tools": tools, "stream": False}
            assert_problem(c.post(url, content=raw_json(body), headers=JSON), 422)
    assert c.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


def _json_bodies(run: Json) -> list[tuple[str, Json]]:
    """(URL, JSON body) pairs, each with a lone surrogate in one text field."""
    rid, agent = run["run_id"], run["agent_id"]
    tools = json.dumps([decided(t, confirmed=True) for t in pending(run)])
    out: list[tuple[str, Json]] = []
    for s in LONE:
        out += [
            (f"/runs/{rid}/cancel", {"reason": s}),
            (f"/runs/{rid}/cancel", {"actor": s}),
            (f"/agents/{agent}/runs", {"message": s, "stream": False}),
            (f"/agents/{agent}/runs", {"message": s}),
            (f"/agents/{agent}/runs", {"message": "hi", "user_id": s, "stream": False}),
            (f"/agents/{agent}/runs", {"message": "hi", "session_id": s}),
            (f"/agents/{agent}/runs/{rid}/continue", {"tools": tools, "user_id": s,
                                                      "stream": False}),
            (f"/agents/{agent}/runs/{rid}/continue", {"tools": tools, "session_id": s}),
            ("/keys", {"name": s, "role": "client"}),
            ("/keys", {"name": "k", "role": "reviewer", "agents": [s]}),
            ("/keys", {"name": "k", "role": "reviewer", "tools": ["delete_records", s]}),
            ("/keys", {"name": "k", "role": "reviewer", "groups": [s]}),
            ("/keys", {"name": "k", "role": "client", s: "an unknown member"}),
            ("/webhooks", {"url": f"http://127.0.0.1:9/{s}"}),
            ("/webhooks", {"url": "http://127.0.0.1:9/h", "event_types": [s]}),
            ("/webhooks", {"url": "http://127.0.0.1:9/h", "secret": s * 20}),
        ]
    return out


def test_a_lone_surrogate_in_a_json_body_is_422(c: httpx.Client, paused: Json) -> None:
    with unchanged(c, paused["run_id"]):
        for url, body in _json_bodies(paused):
            r = c.post(url, content=raw_json(body), headers=JSON)
            assert r.status_code == 422, (url, body, r.status_code, r.text)
            assert_problem(r, 422)
    assert c.get(f"/runs/{paused['run_id']}").json()["status"] == "PAUSED"


def _multipart(charset: str, **fields: str) -> tuple[bytes, dict[str, str]]:
    parts = b"".join(b'--x\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                     % (k.encode(), v.encode("ascii")) for k, v in fields.items())
    return parts + b"--x--\r\n", {
        "content-type": f"multipart/form-data; boundary=x; charset={charset}"}


def test_a_lone_surrogate_in_a_form_field_is_422(c: httpx.Client, paused: Json) -> None:
    """A multipart form in a charset whose decoding yields lone surrogates (UTF-7:
    ``+2AA-`` is U+D800; the rest of these fields reads the same in UTF-7 as in ASCII)."""
    rid = paused["run_id"]
    call_id = pending(paused)[0]["tool_call_id"]
    note = json.dumps([{"tool_call_id": call_id, "confirmed": False,
                        "confirmation_note": "+2AA-"}])
    cases = [
        ("/agents/data_manager/runs", {"message": "+2AA-", "stream": "false"}),
        ("/agents/data_manager/runs", {"message": "hi", "user_id": "+2AA-"}),
        (f"/agents/data_manager/runs/{rid}/continue", {"tools": note, "stream": "false"}),
    ]
    with unchanged(c, rid):
        for url, fields in cases:
            body, headers = _multipart("utf-7", **fields)
            assert_problem(c.post(url, content=body, headers=headers), 422)


def test_a_surrogate_pair_is_a_character_like_any_other(c: httpx.Client,
                                                        paused: Json) -> None:
    """Escaped as a pair (as JSON encoders with ASCII output send U+1F600), it is accepted
    and recorded as the one character it stands for."""
    tools = json.dumps([decided(t, confirmed=False, confirmation_note=f"no {PAIR}")
                        for t in pending(paused)])
    assert "\\ud83d\\ude00" in tools
    r = post_continue(c, "data_manager", paused["run_id"], tools=tools, stream="false")
    assert r.status_code == 200, r.text
    other = start(c, "data_manager", DELETE)
    r = c.post(f"/runs/{other['run_id']}/cancel", content=raw_json({"reason": PAIR}),
               headers=JSON)
    assert r.status_code == 200, r.text
    for rid, text in ((paused["run_id"], "no \U0001F600"), (other["run_id"], "\U0001F600")):
        assert text in json.dumps(events(c, rid), ensure_ascii=False)


# ------------------------------------------------- ids of other aggregates

def test_revoking_what_is_not_a_key_is_404(c: httpx.Client, paused: Json) -> None:
    r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 201, r.text
    webhook_id = r.json()["webhook"]["id"]
    with unchanged(c, paused["run_id"]):
        for not_a_key in (paused["run_id"], webhook_id, str(uuid.uuid4())):
            assert_problem(c.post(f"/keys/{not_a_key}/revoke"), 404)
    # A key is still revoked by its id, once.
    r = c.post("/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}", "role": "client"})
    assert r.status_code == 201, r.text
    key_id = r.json()["key"]["id"]
    assert c.post(f"/keys/{key_id}/revoke").json()["revoked"] is True
    with unchanged(c):
        assert_problem(c.post(f"/keys/{key_id}/revoke"), 409)


def test_the_events_of_what_is_not_a_run_are_404(c: httpx.Client) -> None:
    r = c.post("/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}", "role": "client"})
    assert r.status_code == 201, r.text
    key_id = r.json()["key"]["id"]
    r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 201, r.text
    webhook_id = r.json()["webhook"]["id"]
    with unchanged(c):
        for aggregate in (key_id, webhook_id):
            assert_problem(c.get(f"/runs/{aggregate}/events"), 404)
            assert_problem(c.get(f"/runs/{aggregate}"), 404)
            assert_problem(c.get(f"/runs/{aggregate}", params={"as_of": "2999-01-01"}), 404)
            assert_problem(c.post(f"/runs/{aggregate}/cancel"), 404)


# ------------------------------------------------ the ends of the time range

# Before every time the store holds, and after: UTC, without a zone (UTC), the zones
# furthest east and west (a year-1 time at +14:00 is in year 0 in UTC, a year-9999 time
# at -14:00 in year 10000), and a year below 1000 (four digits where text is compared).
EARLIEST = ["0001-01-01T00:00:00", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00-14:00", "0999-12-31T23:59:59"]
LATEST = ["9999-12-31T23:59:59.999999", "9999-12-31T23:59:59.999999Z",
          "9999-12-31T23:59:59.999999+14:00", "9999-12-31T23:59:59.999999-14:00"]


def _decided_run(c: httpx.Client) -> str:
    """A run with one decision, once the audit trail shows it."""
    run = start(c, "data_manager", DELETE)
    continue_(c, run, [decided(t, confirmed=True) for t in pending(run)])
    deadline = time.monotonic() + 15
    while c.get("/audit/decisions", params={"run_id": run["run_id"]}).json()["total"] < 1:
        assert time.monotonic() < deadline, "the audit projection did not catch up"
        time.sleep(0.05)
    return str(run["run_id"])


def _found(c: httpx.Client, run_id: str, **params: str) -> bool:
    """Whether the run's decision is among those matching ``params``, in every format."""
    found = []
    for fmt in ("json", "csv", "jsonl"):
        r = c.get("/audit/decisions", params={**params, "run_id": run_id, "format": fmt})
        assert r.status_code == 200, (params, fmt, r.text)
        found.append(run_id in r.text)
    assert len(set(found)) == 1, (params, found)
    return found[0]


def _analytics(c: httpx.Client, **params: str) -> list[Json]:
    r = c.get("/analytics/decisions", params=params)
    assert r.status_code == 200, (params, r.text)
    groups: list[Json] = r.json()["groups"]
    return groups


def test_since_and_until_at_the_ends_of_time(c: httpx.Client) -> None:
    run_id = _decided_run(c)
    everything = _analytics(c)
    assert everything
    with unchanged(c):
        for t in EARLIEST:
            assert _found(c, run_id, since=t), t
            assert not _found(c, run_id, until=t), t
            assert _analytics(c, since=t) == everything, t
            assert _analytics(c, until=t) == [], t
        for t in LATEST:
            assert not _found(c, run_id, since=t), t
            assert _found(c, run_id, until=t), t
            assert _analytics(c, since=t) == [], t
            assert _analytics(c, until=t) == everything, t
        for early, late in zip(EARLIEST, LATEST, strict=False):
            assert _found(c, run_id, since=early, until=late), (early, late)
            assert _analytics(c, since=early, until=late, group_by="day") == _analytics(
                c, group_by="day")


@pytest.mark.parametrize("value", ["-1", "0", "1700000000", "1.5e9", "yesterday", "12:00"])
def test_a_time_that_is_not_iso_8601_is_422(c: httpx.Client, value: str) -> None:
    """Times in queries are ISO 8601 text; a number is not taken as seconds since 1970."""
    run_id = _decided_run(c)
    with unchanged(c):
        for path, param in [("/audit/decisions", "since"), ("/audit/decisions", "until"),
                            ("/analytics/decisions", "since"),
                            ("/analytics/decisions", "until"), (f"/runs/{run_id}", "as_of")]:
            assert_problem(c.get(path, params={param: value}), 422)


# ----------------------------------------------------------- Last-Event-ID

# Past what the log can hold, not a number, not in decimal ASCII digits (U+0661 is an
# Arabic-Indic one, sent as UTF-8 bytes).
BAD_EVENT_IDS: list[str | bytes] = [
    str(2**63), str(2**64), "9" * 40, str(2**62 + 1), "-1", "+1", "abc", "1.5", "0x10",
    "1_000", "1 2", "\u0661".encode()]


@pytest.mark.parametrize("route", ["run", "queue"])
def test_a_last_event_id_past_the_log_is_422_before_the_stream(c: httpx.Client, paused: Json,
                                                               route: str) -> None:
    url = f"/runs/{paused['run_id']}/stream" if route == "run" else "/queue/stream"
    with unchanged(c, paused["run_id"]):
        for value in BAD_EVENT_IDS:
            with c.stream("GET", url, headers={"Last-Event-ID": value}, timeout=10) as r:
                assert r.status_code == 422, (value, r.status_code)
                r.read()
                assert_problem(r, 422)
    # A position the log can hold resumes after it; an empty one is no position at all.
    for value in ("0", "3", str(2**62), ""):
        with c.stream("GET", url, headers={"Last-Event-ID": value}, timeout=10) as r:
            assert r.status_code == 200, (value, r.status_code)
            assert r.headers["content-type"].startswith("text/event-stream")


# --------------------------------------------------------- message limit

def test_a_message_over_the_limit_is_413(c: httpx.Client) -> None:
    """The message limit is a setting (413): no limit of the form's own refuses the
    message first (a 422)."""
    limit = Settings.model_fields["max_message_chars"].default  # the server's: default
    with unchanged(c):
        for stream in ("false", None):
            assert_problem(post_start(c, "data_manager", message="x" * (limit + 1),
                                      stream=stream), 413)
        assert_problem(c.post("/agents/data_manager/runs", headers=JSON, content=raw_json(
            {"message": "x" * (limit + 1), "stream": False})), 413)


# -------------------------------------------------------------------- JWTs

JWT_SECRET = "a-shared-secret-of-the-identity-provider-0123456789"


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("bad_jwt")
    with live_server(f"sqlite:///{tmp / 'signoff.db'}", tmp / "server.log",
                     SIGNOFF_JWT_KEY=JWT_SECRET) as s:
        yield s


def _token(**claims: Any) -> str:
    claims = {"sub": "jo", "role": "reviewer", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


BAD_CLAIMS: dict[str, Json] = {
    "agents of numbers": {"signoff_agents": [1, 2]},
    "agents of lists": {"signoff_agents": [["data_manager"]]},
    "agents of objects": {"signoff_agents": [{"id": "data_manager"}]},
    "agents not a list": {"signoff_agents": "data_manager"},
    "tools of numbers": {"signoff_tools": [1]},
    "tools not a list": {"signoff_tools": {"delete_records": True}},
    "groups of numbers": {"signoff_groups": [1, 2]},
    "groups of nulls": {"signoff_groups": [None]},
    "groups not a list": {"signoff_groups": "oncall"},
    "empty subject": {"sub": ""},
    "blank subject": {"sub": "   "},
    "subject not a string": {"sub": 42},
    "role not a string": {"role": ["reviewer"]},
}


@pytest.mark.parametrize("case", list(BAD_CLAIMS))
def test_a_jwt_with_bad_claims_is_401(jwt_server: LiveServer, case: str) -> None:
    offset = jwt_server.log_path.stat().st_size
    token = _token(**BAD_CLAIMS[case])
    with jwt_server.client() as c:
        with unchanged(c):
            for path in ("/queue", "/agents"):
                r = c.get(path, headers={"Authorization": f"Bearer {token}"})
                body = assert_problem(r, 401)
                assert r.headers["www-authenticate"].startswith("Bearer")
                claim = next(iter(BAD_CLAIMS[case]))
                assert claim in body["detail"] or "invalid token" in body["detail"], body
        # The same token with good claims is a reviewer.
        good = _token(signoff_agents=["data_manager"], signoff_tools=["delete_records"],
                      signoff_groups=["oncall"])
        r = c.get("/queue", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200, r.text
    _clean_log(jwt_server, offset)
