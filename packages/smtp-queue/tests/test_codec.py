"""Stored metadata: exact round trips, and hostile files rejected cleanly."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import TIME, envelopes, message_states

from smtp_queue._codec import (
    CodecError,
    decode_header,
    decode_state,
    encode_header,
    encode_state,
)

if TYPE_CHECKING:
    from smtp_queue import Envelope, MessageState

MESSAGE_ID = "018bcfe5680072000000000000ab"
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    # Past a float's range (OverflowError in float()).
    | st.integers(min_value=2**1024, max_value=2**1100)
    | st.floats()
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(envelopes, TIME)
def test_header_round_trip(envelope: Envelope, arrival: float) -> None:
    """Every envelope (RFC 5321 addresses, RFC 3461 DSN parameters, RFC 6531
    UTF-8, unknown ESMTP parameters) reads back equal."""
    data = encode_header(MESSAGE_ID, arrival, envelope)
    assert decode_header(data) == (MESSAGE_ID, arrival, envelope)


@given(message_states)
def test_state_round_trip(state: MessageState) -> None:
    """Every state, replies included (RFC 5321 4.2, RFC 3463), reads back equal."""
    assert decode_state(encode_state(state), len(state.recipients)) == state


@given(st.binary(max_size=300))
def test_decoders_reject_random_bytes_cleanly(data: bytes) -> None:
    """Hostile input: any bytes give a value or a CodecError, nothing else."""
    for decode in (decode_header, lambda d: decode_state(d, 1)):
        with contextlib.suppress(CodecError):
            decode(data)


@given(json_values)
def test_decoders_reject_random_json_cleanly(value: object) -> None:
    """Any JSON document: a value or a CodecError, nothing else."""
    data = json.dumps(value).encode()
    for decode in (decode_header, lambda d: decode_state(d, 1)):
        with contextlib.suppress(CodecError):
            decode(data)


@given(envelopes, message_states, st.data())
def test_decoders_survive_one_mutated_field(
    envelope: Envelope, state: MessageState, data: st.DataObject
) -> None:
    """A valid document with any one value replaced: accepted only if valid."""
    for encoded, decode in (
        (encode_header(MESSAGE_ID, 0.0, envelope), decode_header),
        (encode_state(state), lambda d: decode_state(d, len(state.recipients))),
    ):
        document = json.loads(encoded)
        paths = list(_paths(document))
        path = data.draw(st.sampled_from(paths))
        replacement = data.draw(json_values)
        _set(document, path, replacement)
        with contextlib.suppress(CodecError):
            decode(json.dumps(document).encode())


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


def _set(document: object, path: tuple[object, ...], value: object) -> None:
    for key in path[:-1]:
        document = document[key]  # type: ignore[index]
    document[path[-1]] = value  # type: ignore[index]


ONE = b'"rcpts":[{"s":"pending","n":0}]'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"v":1,"next":NaN,"attempts":0,"held":false,' + ONE + b"}", "not a number"),
        (b'{"v":1,"next":-Infinity,"attempts":0,"held":false,' + ONE + b"}", "not a"),
        (b'{"v":1,"next":1,"attempts":true,"held":false,' + ONE + b"}", "boolean"),
        (b'{"v":1,"next":1,"attempts":-1,"held":false,' + ONE + b"}", "out of range"),
        (
            b'{"v":1,"next":1e300,"attempts":0,"held":false,' + ONE + b"}",
            "out of range",
        ),
        (b'{"v":2,"next":1,"attempts":0,"held":false,' + ONE + b"}", "version"),
        (b'{"v":1,"next":1,"attempts":0,"held":0,' + ONE + b"}", "held"),
        (b'{"v":1,"next":1,"attempts":0,"held":false,"rcpts":[]}', "0 recipients"),
        (
            b'{"v":1,"next":1,"attempts":0,"held":false,"rcpts":[{"s":"gone","n":0}]}',
            "status",
        ),
        # An integer too large for a float, and one of more digits than
        # Python converts (4300 by default): no OverflowError or ValueError.
        (b'{"v":1,"next":1' + b"0" * 400 + b',"attempts":0,"held":false,' + ONE + b"}", "range"),
        (b'{"v":1,"next":1' + b"0" * 5000 + b',"attempts":0,"held":false,' + ONE + b"}", "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
    ],
)
def test_state_decoder_rejects_specific_hostile_documents(data: bytes, message: str) -> None:
    """Bool-for-int, NaN, huge numbers, deep nesting, bad UTF-8: all CodecError.

    Before, a huge integer escaped as OverflowError or ValueError and ended
    the queue's serve() at every start, its file still due."""
    with pytest.raises(CodecError, match=message):
        decode_state(data, 1)


def test_state_decoder_rejects_never_as_a_sent_notice() -> None:
    """RFC 3461 4.1: NEVER is a request, not a notification that can be sent."""
    data = (
        b'{"v":1,"next":1,"attempts":0,"held":false,'
        b'"rcpts":[{"s":"pending","n":0,"dsn":["NEVER"]}]}'
    )
    with pytest.raises(CodecError, match="NEVER"):
        decode_state(data, 1)


def test_header_decoder_rejects_duplicate_recipients_and_bad_addresses() -> None:
    """A header this package could not have written is refused."""
    base = {
        "v": 1,
        "id": MESSAGE_ID,
        "arrival": 1.0,
        "envelope": {"from": None, "rcpts": [{"to": ["a", "b.example"]}] * 2},
    }
    with pytest.raises(CodecError, match="duplicate"):
        decode_header(json.dumps(base).encode())
    base["envelope"] = {
        "from": ["a\r\nRCPT TO:<x@y>", "b.example"],
        "rcpts": [{"to": ["a", "b.example"]}],
    }
    with pytest.raises(CodecError, match="mailbox"):
        decode_header(json.dumps(base).encode())
    base["envelope"] = {"from": None, "rcpts": []}
    with pytest.raises(CodecError, match="at least one recipient"):
        decode_header(json.dumps(base).encode())
