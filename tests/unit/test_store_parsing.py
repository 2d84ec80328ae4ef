"""The store's readers of JetStream's own subjects and answers: pure functions, no server."""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.store import _publish_answer, ack_numbers


@dataclass
class Msg:
    data: bytes
    headers: dict[str, str] | None = None


def test_ack_numbers_reads_the_delivery_count_and_stream_sequence_of_both_subject_layouts():
    assert ack_numbers("$JS.ACK.ALERTS.engine.3.1042.17.1732960000000000000.0") == (3, 1042)
    # with a domain and an account hash after ACK (and a trailing token)
    assert ack_numbers("$JS.ACK.hub.ACCHASH.ALERTS.engine.1.77.5.1732960000000000000.2.x") == (1, 77)


def test_a_stored_publish_answer_gives_its_acknowledgement():
    ack, code, why = _publish_answer(Msg(b'{"stream":"KV_units","seq":12}'))
    assert ack == {"stream": "KV_units", "seq": 12} and code is None and why == ""


def test_a_refused_write_gives_jetstreams_error_code_and_description():
    ack, code, why = _publish_answer(Msg(b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}'))
    assert ack is None and code == 10071 and why == "wrong last sequence: 4"


def test_no_stream_for_the_subject_is_told_by_the_status_of_the_empty_answer():
    ack, code, why = _publish_answer(Msg(b"", {"Status": "503"}))
    assert ack is None and code is None and why == "no stream answered (status 503)"


def test_an_answer_without_a_sequence_is_unexpected_and_quoted():
    ack, code, why = _publish_answer(Msg(b'{"stream":"X"}'))
    assert ack is None and code is None and why.startswith("unexpected answer b'{\"stream\"")


def test_the_fast_path_reads_plain_acknowledgements_exactly_as_json_loads_does():
    import json

    for data in (
        b'{"stream":"KV_units","seq":1}',
        b'{"stream":"RADIO","seq":123456789,"duplicate": true}',
        b'{"stream":"RADIO","seq":7,"duplicate":true}',
        b'{"stream":"","seq":0}',
        b'{"stream":"a\\"b","seq":1}',  # an escape: json.loads reads it
        b'{"stream":"X","domain":"hub","seq":3}',
    ):
        ack, code, why = _publish_answer(Msg(data))
        assert ack == json.loads(data) and code is None and why == ""
    # JSON json.loads refuses is refused by the fast path as well
    ack, code, why = _publish_answer(Msg(b'{"stream":"X","seq":007}'))
    assert ack is None and why == "no stream answered (status none)"


def test_header_lines_parses_as_nats_py_does():
    import random

    from nats.aio.client import Client

    from dispatch.store import _REPLACED, header_lines

    theirs = Client.__dict__["_parse_header_lines"].__func__
    if theirs is header_lines:  # installed by an engine started in this process: nats-py's own was kept
        theirs = _REPLACED[0]
    rng = random.Random(7)
    pieces = [bytes([i]) for i in range(256)] + [b"\r\n", b":", b" ", b"Nats-Msg-Id", b"\xc3\xa9", b"\x1c", b"\t"]
    for _ in range(20_000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        assert header_lines(raw) == theirs(raw), raw
        assert header_lines(raw) == theirs(raw), raw  # names remembered
    raw = b"Nats-Msg-Id: 6f1c2a0d\r\nNats-Expected-Last-Subject-Sequence: 12\r\nBad Name: x\r\n\r\n"
    assert header_lines(raw) == theirs(raw) == {"Nats-Msg-Id": "6f1c2a0d", "Nats-Expected-Last-Subject-Sequence": "12"}
