"""SSE parsing: events split anywhere, line-ending variants, comments, multi-line data."""

from __future__ import annotations

import pytest

from bench.harness import SSEParser

STREAM = (
    b": ping\r\n\r\n"
    b'data: {"choices":[{"text":"a"}]}\r\n\r\n'
    b'data:{"choices":[{"text":"b"}]}\n\n'
    b"event: message\ndata: line1\ndata: line2\nid: 7\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"choices":[{"text":"a"}]}',
    b'{"choices":[{"text":"b"}]}',
    b"line1\nline2",
    b"[DONE]",
]


def test_whole_stream():
    p = SSEParser()
    assert p.feed(STREAM) + p.finish() == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut):
    p = SSEParser()
    assert p.feed(STREAM[:cut]) + p.feed(STREAM[cut:]) + p.finish() == EXPECTED


def test_byte_by_byte():
    p = SSEParser()
    out = []
    for i in range(len(STREAM)):
        out += p.feed(STREAM[i : i + 1])
    assert out + p.finish() == EXPECTED


def test_cr_only_line_endings_and_unterminated_last_event():
    p = SSEParser()
    assert p.feed(b"data: x\r\rdata: [DONE]") == [b"x"]
    assert p.finish() == [b"[DONE]"]
    assert p.finish() == []


def _fold(*events: bytes):
    from bench.harness.client import _Response
    from bench.harness.metrics import RequestRecord

    rec = RequestRecord()
    r = _Response(rec, 0.0)
    for i, e in enumerate(events):
        r.feed(e, 0.1 * (i + 1))
    r.finish_stream(1.0, None)
    return rec


ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d}}\n\n'


def test_chat_role_chunk_is_not_the_first_token():
    rec = _fold(ROLE, TOKEN, TOKEN, USAGE % 2, b"data: [DONE]\n\n")
    assert rec.ok and rec.ttft_s == pytest.approx(0.2) and rec.itl_s == [pytest.approx(0.1)]
    assert rec.e2el_s == pytest.approx(0.3) and rec.output_tokens == 2
    assert rec.tokens_source == "usage" and rec.input_tokens == 5


def test_whole_stream_with_empty_answer_is_a_success_without_ttft():
    rec = _fold(ROLE, USAGE % 0, b"data: [DONE]\n\n")
    assert rec.ok and rec.ttft_s is None and rec.output_tokens == 0 and rec.e2el_s == 1.0


def test_stream_cut_before_any_token_is_an_error():
    assert _fold(ROLE).error == "no_tokens"


def test_error_event_and_bad_json():
    assert _fold(TOKEN, b'data: {"error": {"message": "boom"}}\n\n').error == "stream_error"
    assert _fold(b"data: {not json\n\n").error == "protocol"
