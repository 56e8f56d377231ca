"""``api.wire.form_fields`` reads a urlencoded body exactly as Starlette's form parser
(python-multipart's querystring parser) does, for any body: the hot routes use the one,
every other route the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.formparsers import FormParser

from api.wire import form_fields


def starlette_fields(body: bytes) -> dict[str, str]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    async def parse() -> dict[str, str]:
        form = await FormParser(Headers({"content-type": "application/x-www-form-urlencoded"}),
                                stream()).parse()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    # In a thread of its own: a test before this one may leave an event loop running in
    # this thread (the browser tests' Playwright does), and asyncio.run refuses to nest.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, parse()).result()


# Bodies with what matters to a parser: separators, escapes (valid, broken, non-UTF-8),
# plus signs, bytes past ASCII.
PIECES = st.sampled_from([b"&", b"=", b"+", b"%", b"%2", b"%26", b"%3D", b"%C3%A9", b"%FF",
                          b"%e2%9c%93", b"a", b"tools", b"stream", b"\xc3\xa9", b"\xff", b" ",
                          b";", b"[]", b"{}"])


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=30).map(b"".join))
def test_any_body_reads_as_starlette_reads_it(body: bytes) -> None:
    assert form_fields(body) == starlette_fields(body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=40), max_size=6))
def test_what_a_client_encodes_is_what_is_read(fields: dict[str, str]) -> None:
    body = urlencode(fields).encode()
    assert form_fields(body) == fields == starlette_fields(body)


def test_too_many_fields_is_refused() -> None:
    with pytest.raises(ValueError):
        form_fields(b"&".join([b"a=1"] * 1001))
    assert len(form_fields(b"&".join(b"a%d=1" % i for i in range(1000)))) == 1000
