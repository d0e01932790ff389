"""The envelope record format, the envelope value type and queue ids (all pure)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.envelope import (
    BodyType,
    DsnRet,
    Envelope,
    Notify,
    Recipient,
    RecipientState,
)
from mxgate.spool import QueueIdSource, SpoolCorruptError, is_queue_id
from mxgate.spool.format import Record, decode, encode
from tests.spool.util import make_envelope

SHA = hashlib.sha256(b"body").hexdigest()


def record(envelope: Envelope | None = None) -> Record:
    return Record(envelope or make_envelope("0V4G2K7Q9M11A3F20003", recipients=3), 4711, SHA)


def test_round_trip() -> None:
    original = record()
    assert decode(encode(original)) == original


def test_the_delay_warning_flag_round_trips_and_is_written_only_once_set() -> None:
    plain = record()
    warned = record(replace(plain.envelope, delay_warned=True))
    assert decode(encode(warned)).envelope.delay_warned is True
    assert b'"delay_warned"' not in encode(plain)  # records as before the flag existed
    assert decode(encode(plain)).envelope.delay_warned is False


def test_the_plain_body_flag_round_trips_and_is_written_only_when_set() -> None:
    before = record()
    flagged = record(replace(before.envelope, plain_body=True))
    assert b' "plain_body": true,\n' in encode(flagged)
    assert decode(encode(flagged)).envelope.plain_body is True
    # Records written before the flag existed (and scanned bodies) lack it.
    assert b'"plain_body"' not in encode(before)
    assert decode(encode(before)).envelope.plain_body is False


def test_round_trip_null_sender_unicode_and_states() -> None:
    env = Envelope(
        queue_id="ABCDEF123456",
        sender="",
        arrival=1.0e9 + 0.123456,
        client_address="2001:db8::1",
        client_helo="[IPv6:2001:db8::1]",
        client_hostname="unknown",
        size=0,
        recipients=(
            Recipient("jöhn@exämple.com", "jöhn@exämple.com", state=RecipientState.DELIVERED),
            Recipient(
                "b@example.com",
                '"odd local"@example.com',
                state=RecipientState.DEFERRED,
                attempts=3,
                next_attempt=1767230000.5,
                last_reply="451 4.3.0 try later\nwith a newline",
                route={"kind": "lmtp", "path": "/run/lmtp", "nested": {"list": [1, None, True]}},
            ),
        ),
        smtputf8=True,
    )
    data = encode(Record(env, 0, SHA))
    assert "jöhn".encode() in data  # readable in an editor, not \u-escaped
    assert decode(data).envelope == env


def test_record_is_readable_json_with_end_line() -> None:
    data = encode(record())
    head, _, last = data.rstrip(b"\n").rpartition(b"\n")
    assert re.fullmatch(rb"END [0-9a-f]{64}", last)
    document = json.loads(head)
    assert document["format"] == "mxgate-envelope"
    assert document["version"] == 1
    assert document["body"] == {"size": 4711, "sha256": SHA}
    assert document["recipients"][0]["notify"] == ["DELAY", "FAILURE"]


def test_every_truncation_is_detected() -> None:
    data = encode(record())
    for cut in range(len(data)):
        with pytest.raises(SpoolCorruptError):
            decode(data[:cut])


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_any_changed_byte_is_detected(data: st.DataObject) -> None:
    encoded = bytearray(encode(record()))
    index = data.draw(st.integers(0, len(encoded) - 1))
    delta = data.draw(st.integers(1, 255))
    encoded[index] = (encoded[index] + delta) % 256
    with pytest.raises(SpoolCorruptError):
        decode(bytes(encoded))


def test_trailing_bytes_after_end_are_detected() -> None:
    with pytest.raises(SpoolCorruptError):
        decode(encode(record()) + b"x\n")


def resealed(document: dict[str, object]) -> bytes:
    head = (json.dumps(document) + "\n").encode()
    return head + b"END " + hashlib.sha256(head).hexdigest().encode() + b"\n"


def valid_document() -> dict[str, object]:
    data = encode(record())
    loaded: dict[str, object] = json.loads(data[: data.rindex(b"END ")])
    return loaded


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(version=2),
        lambda d: d.update(format="postfix"),
        lambda d: d.update(size="12"),
        lambda d: d.update(smtputf8=1),
        lambda d: d.update(body_type="BINARYMIME"),
        lambda d: d.pop("sender"),
        lambda d: d["recipients"][0].update(state="LOST"),
        lambda d: d["recipients"][0].update(attempts=-1),
        lambda d: d["recipients"].append(d["recipients"][0]),
        lambda d: d.update(body=[]),
        lambda d: d.update(ret="PART"),
        lambda d: d["recipients"][0].update(notify=["SOMETIMES"]),
        lambda d: d["recipients"][0].update(notify=[1]),
    ],
)
def test_well_sealed_but_invalid_records_are_corrupt(change) -> None:
    document = valid_document()
    change(document)
    with pytest.raises(SpoolCorruptError):
        decode(resealed(document))


def sealed(head: bytes) -> bytes:
    return head + b"END " + hashlib.sha256(head).hexdigest().encode() + b"\n"


@pytest.mark.parametrize(
    "head", [b"\n", b" \n", b"{\n", b'{"format": 1} {"format": 2}\n', b"[] x\n", b'"\x01"\n']
)
def test_well_sealed_text_that_is_not_one_json_value_is_corrupt(head: bytes) -> None:
    with pytest.raises(SpoolCorruptError, match="invalid record"):
        decode(sealed(head))


def test_blanks_around_the_json_value_are_allowed_as_json_allows_them() -> None:
    data = encode(record())
    head = data[: data.rindex(b"END ")]
    assert decode(sealed(b" \t\r\n" + head + b"\r\n \n")) == decode(data)


def test_unstorable_values_are_refused_at_encode() -> None:
    env = make_envelope("ABCDEF123456")
    with pytest.raises(ValueError):
        encode(Record(replace(env, arrival=float("nan")), 0, SHA))


addresses = st.text(min_size=1, max_size=40)
recipients = st.builds(
    Recipient,
    address=addresses,
    original=addresses,
    orcpt=st.none() | st.text(max_size=40),
    notify=st.frozensets(st.sampled_from(Notify)),
    route=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none()),
    state=st.sampled_from(RecipientState),
    attempts=st.integers(0, 1000),
    next_attempt=st.none() | st.floats(0, 4e9),
    last_reply=st.text(max_size=60),
)
envelopes = st.builds(
    Envelope,
    queue_id=st.from_regex(r"[0-9A-Z]{6,40}", fullmatch=True),
    sender=st.text(max_size=40),
    arrival=st.floats(0, 4e9),
    client_address=st.text(max_size=40),
    client_helo=st.text(max_size=40),
    client_hostname=st.text(max_size=40),
    size=st.integers(0, 2**40),
    recipients=st.lists(recipients, min_size=1, max_size=5, unique_by=lambda r: r.address).map(
        tuple
    ),
    body_type=st.sampled_from(BodyType),
    smtputf8=st.booleans(),
    ret=st.none() | st.sampled_from(DsnRet),
    envid=st.none() | st.text(max_size=20),
)


def without_surrogates(env: Envelope) -> bool:
    try:
        repr(env).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(envelopes.filter(without_surrogates))
@settings(max_examples=150, deadline=None)
def test_round_trip_any_envelope(env: Envelope) -> None:
    assert decode(encode(Record(env, env.size, SHA))).envelope == env


def reference_encode(rec: Record) -> bytes:
    """The format spelled out with json.dumps per value, as version 1 was first
    written: encode() is tuned for speed and must keep producing these bytes."""
    env = rec.envelope

    def dumps(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    fields = {
        "format": "mxgate-envelope",
        "version": 1,
        "queue_id": env.queue_id,
        "body": {"size": rec.body_size, "sha256": rec.body_sha256},
        "sender": env.sender,
        "arrival": env.arrival,
        "client_address": env.client_address,
        "client_helo": env.client_helo,
        "client_hostname": env.client_hostname,
        "size": env.size,
        "body_type": env.body_type.value,
        "smtputf8": env.smtputf8,
        "ret": env.ret.value if env.ret else None,
        "envid": env.envid,
    }
    recipients = [
        {
            "address": r.address,
            "original": r.original,
            "orcpt": r.orcpt,
            "notify": sorted(n.value for n in r.notify),
            "route": dict(r.route),
            "state": r.state.value,
            "attempts": r.attempts,
            "next_attempt": r.next_attempt,
            "last_reply": r.last_reply,
        }
        for r in env.recipients
    ]
    text = (
        "{\n"
        + "".join(f" {dumps(key)}: {dumps(value)},\n" for key, value in fields.items())
        + ' "recipients": [\n'
        + ",\n".join("  " + dumps(r) for r in recipients)
        + "\n ]\n}\n"
    )
    head = text.encode("utf-8")
    return head + b"END " + hashlib.sha256(head).hexdigest().encode() + b"\n"


@given(envelopes.filter(without_surrogates))
@settings(max_examples=150, deadline=None)
def test_encoding_is_byte_for_byte_the_version_1_format(env: Envelope) -> None:
    assert encode(Record(env, env.size, SHA)) == reference_encode(Record(env, env.size, SHA))


# -- the envelope value type ---------------------------------------------------------


def test_with_recipient_replaces_by_address_and_keeps_order() -> None:
    env = make_envelope("ABCDEF123456", recipients=3)
    done = Recipient("user1@example.com", "x", state=RecipientState.DELIVERED)
    updated = env.with_recipient(done)
    assert [r.address for r in updated.recipients] == [r.address for r in env.recipients]
    assert updated.recipients[1] is done
    assert env.recipients[1].state is RecipientState.PENDING
    with pytest.raises(KeyError):
        env.with_recipient(Recipient("nobody@example.com", "x"))


@given(envelopes, st.booleans(), st.booleans())
@settings(max_examples=100, deadline=None)
def test_with_recipients_keeps_every_other_field(env: Envelope, warned: bool, plain: bool) -> None:
    """with_recipients builds its copy field by field (not dataclasses.replace):
    a field it forgot would be lost at the first delivery."""
    env = replace(env, delay_warned=warned, plain_body=plain)
    first = replace(env.recipients[0], state=RecipientState.DELIVERED, attempts=7)
    updated = env.with_recipients((first,))
    assert updated == replace(env, recipients=(first, *env.recipients[1:]))


def test_done_and_next_attempt() -> None:
    env = make_envelope("ABCDEF123456", recipients=3)
    assert not env.is_done and env.next_attempt is None
    a, b, c = env.recipients
    env = env.with_recipients(
        [
            Recipient(a.address, a.original, state=RecipientState.DELIVERED, next_attempt=5.0),
            Recipient(b.address, b.original, state=RecipientState.DEFERRED, next_attempt=200.0),
            Recipient(c.address, c.original, state=RecipientState.DEFERRED, next_attempt=100.0),
        ]
    )
    assert env.next_attempt == 100.0
    assert [r.address for r in env.unfinished()] == [b.address, c.address]
    env = env.with_recipients(
        [Recipient(r.address, r.original, state=RecipientState.BOUNCED) for r in (b, c)]
    )
    assert env.is_done and env.next_attempt is None


def test_duplicate_final_recipients_are_refused() -> None:
    rcpt = Recipient("a@example.com", "a@example.com")
    with pytest.raises(ValueError):
        Envelope("ABCDEF123456", "", 0.0, "", "", "", 0, (rcpt, rcpt))


# -- queue ids -------------------------------------------------------------------------


def test_queue_ids_are_unique_valid_and_sorted_by_time() -> None:
    now = [1767225600.0]
    source = QueueIdSource(clock=lambda: now[0], pid=lambda: 4242)
    ids = []
    for _ in range(1000):
        ids.append(source.new())
        now[0] += 0.000001
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_queue_id(i) and len(i) == 20 for i in ids)


def test_queue_ids_keep_their_spelling() -> None:
    # time, pid and counter in Crockford base32, most significant first
    assert QueueIdSource(clock=lambda: 0.0, pid=lambda: 1).new() == "00000000000000010000"
    source = QueueIdSource(clock=lambda: 1767225600.25, pid=lambda: 2**22 - 1)
    ids = [source.new() for _ in range(42)]
    assert ids[0] == "1J79132844G3ZZZZ0000"
    assert ids[41] == "1J79132844G3ZZZZ0019"


ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32


def _one_number_spelling(micros: int, pid: int, count: int) -> str:
    """The id's definition: one 100-bit number in Crockford base32, 20 chars."""
    value = (micros % 32**11) << 45 | (pid % 32**5) << 20 | (count % 32**4)
    return "".join(ALPHABET[(value >> shift) & 31] for shift in range(95, -1, -5))


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.floats(min_value=0, max_value=2**55 / 1e6, allow_nan=False),
    pids=st.lists(st.integers(min_value=0, max_value=2**26), min_size=1, max_size=3),
)
def test_queue_ids_spell_time_pid_and_counter_as_one_number(
    seconds: float, pids: list[int]
) -> None:
    # The parts are spelled one by one (machine words); the spelling is still
    # that of the one number, whatever the pid does between calls (a fork).
    current = [pids[0]]
    source = QueueIdSource(clock=lambda: seconds, pid=lambda: current[0])
    micros = int(seconds * 1_000_000)
    for count in range(1030):  # past 1024: the counter's upper pair moves
        current[0] = pids[count % len(pids)]
        assert source.new() == _one_number_spelling(micros, current[0], count)


def test_queue_ids_differ_between_processes_at_the_same_instant() -> None:
    a = QueueIdSource(clock=lambda: 1.0, pid=lambda: 100)
    b = QueueIdSource(clock=lambda: 1.0, pid=lambda: 101)
    assert {a.new() for _ in range(50)}.isdisjoint({b.new() for _ in range(50)})


def test_queue_ids_stay_unique_within_one_microsecond() -> None:
    source = QueueIdSource(clock=lambda: 1.0, pid=lambda: 7)
    assert len({source.new() for _ in range(5000)}) == 5000


@pytest.mark.parametrize(
    "text", ["", "abc123", "ABC", "ABCDEF/1", "ABCDEF 1", "../ABCDEF", "A" * 41]
)
def test_invalid_queue_ids(text: str) -> None:
    assert not is_queue_id(text)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON_VALUES)
@settings(max_examples=300)
def test_the_one_shot_encoder_writes_what_the_json_module_writes(value: object) -> None:
    from mxgate.spool.format import _encode_json

    assert _encode_json(value) == json.dumps(value, ensure_ascii=False, allow_nan=False)


def test_the_one_shot_encoder_refuses_what_json_refuses() -> None:
    from mxgate.spool.format import _encode_json

    for bad in (float("nan"), float("inf"), {"when": float("-inf")}):
        with pytest.raises(ValueError):
            _encode_json(bad)
    with pytest.raises(TypeError):
        _encode_json({1, 2})
