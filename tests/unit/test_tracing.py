"""agents.tracing.TraceContext: the W3C ``traceparent`` every hop parses, strict on what it
refuses and lenient only on case and surrounding blanks (as the W3C spec asks receivers)."""

from __future__ import annotations

import pytest

from agents.tracing import TraceContext

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("flags", "sampled"), [("00", False), ("01", True), ("02", False), ("03", True), ("ff", True)]
)
def test_the_sampled_bit_is_the_low_bit_of_the_flags(flags, sampled):
    assert TraceContext.parse(f"00-{TRACE}-{SPAN}-{flags}") == TraceContext(TRACE, SPAN, sampled)


def test_case_and_blanks_are_forgiven_and_the_form_written_is_canonical():
    ctx = TraceContext.parse(f"  00-{TRACE.upper()}-{SPAN.upper()}-01\t")
    assert ctx == TraceContext(TRACE, SPAN, True)
    assert ctx.traceparent == f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{SPAN}-01",  # an all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # so is an all-zero span id
        f"01-{TRACE}-{SPAN}-01",  # only version 00
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        "",
    ],
)
def test_malformed_values_are_refused(value):
    with pytest.raises(ValueError, match="invalid traceparent"):
        TraceContext.parse(value)


def test_ids_are_fresh_non_zero_hex_of_the_right_width():
    root = TraceContext.new_root()
    child = root.child()
    assert len(root.trace_id) == 32 and len(root.span_id) == len(child.span_id) == 16
    assert child.trace_id == root.trace_id and child.span_id != root.span_id
    assert int(root.trace_id, 16) and int(child.span_id, 16)
    assert TraceContext.parse(child.traceparent) == child
