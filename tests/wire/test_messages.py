"""The deal's typed messages (`wire.messages`): the wire form the channel always carried (maps
tagged by `t`), one strict parse, and errors that neither crash a node nor repeat at length
what a peer chose to send."""

from __future__ import annotations

import msgpack
import pytest

from p2psched.identity import Identity
from p2psched.wire.codec import DecodeError, decode
from p2psched.wire.deal import Commitment, Quote, Receipt, result_hash
from p2psched.wire.messages import encode as encode_message
from p2psched.wire.messages import parse
from p2psched.wire.schema import SchemaError

A, B = Identity.generate(), Identity.generate()
TASK = {"id": "j/0", "driver": "echo", "model": None, "input": {"n": [1, 2.5, "x"]}, "timeout": 5.0}


def maps() -> list[dict]:
    """One message of every kind, as maps (the form both old and new peers put on the wire)."""
    quote = Quote(A.node_id, B.node_id, "j", 0.5, 1.0, 0.1, 2.0, 3, 100.0).signed(A)
    commitment = Commitment(B.node_id, A.node_id, "j", ["j/0"], 0.5, 1.0).signed(B)
    receipt = Receipt(A.node_id, B.node_id, "j", "j/0", True, result_hash(7), 1.0, 0.5, 2.0)
    signed = receipt.signed(A).to_wire()
    ask = {"rid": 1, "job": "j", "tasks": 2, "driver": "echo", "model": "m", "max_price": 1.5}
    return [
        {"t": "quote?", **ask},
        {"t": "quote?", **ask, "gpus": 4},
        {"t": "reserve", **ask, "max_price": float("inf")},
        {"t": "commit", "rid": 2, "commitment": commitment.to_wire(), "run": [TASK]},
        {"t": "unreserve", "rid": 3},
        {"t": "withdraw", "rid": 4, "tasks": ["j/0"]},
        {"t": "run", "tasks": [TASK]},
        {"t": "ack", "tasks": ["j/0"]},
        {"t": "cancel", "tasks": []},
        {"t": "quote", "rid": 1, "quote": quote.to_wire()},
        {"t": "decline", "rid": 1, "reason": "busy", "busy": True},
        {"t": "error", "reason": "no"},
        {"t": "ready", "rid": 3, "price": 2.0, "gpus": 2},
        {"t": "withdrawn", "rid": 4, "tasks": []},
        {"t": "lease", "rid": 2, "tasks": ["j/0"], "expires": 9.0},
        {"t": "reject", "rid": 2, "reason": "full", "busy": True},
        {"t": "beat", "running": ["j/0"], "progress": [0.5]},
        {"t": "result", "task": "j/0", "output": 7, "error": None, "receipt": signed},
        {
            "t": "challenge?",
            "rid": 5,
            "seed": b"s" * 32,
            "n": 512,
            "commitment": commitment.to_wire(),
            "rounds": 3,
        },
        {"t": "challenge-open", "rid": 5, "rows": [0, 511]},
        {"t": "challenge-root", "rid": 5, "root": b"r" * 32, "seconds": 0.5},
        {
            "t": "challenge-rows",
            "rid": 5,
            "rows": [b"\0" * 8],
            "proofs": [[b"h" * 32]],
            "receipt": signed,
        },
    ]


@pytest.mark.parametrize("message", maps(), ids=lambda m: m["t"])
def test_every_kind_keeps_the_wire_form_both_ways(message: dict) -> None:
    parsed = parse(msgpack.packb(message, use_bin_type=True))
    assert decode(encode_message(parsed)) == message


def test_a_document_on_the_wire_must_be_signed() -> None:
    unsigned = Quote(A.node_id, B.node_id, "j", 0.5, 1.0, 0.1, 2.0, 3, 100.0).to_wire()
    del unsigned["sig"]
    with pytest.raises(SchemaError, match="quote.quote.sig"):
        parse(msgpack.packb({"t": "quote", "rid": 1, "quote": unsigned}))


def test_a_frame_nested_thousands_deep_is_malformed_wherever_it_nests() -> None:
    deep = b"\x91" * 5000 + b"\xc0"
    result = msgpack.packb({"t": "result", "task": "j/0"})
    rest = msgpack.packb({"error": None, "receipt": {}})
    in_output = b"\x85" + result[1:] + msgpack.packb("output") + deep + rest[1:]
    with pytest.raises(DecodeError, match="nested too deep"):
        parse(in_output)
    unknown_kind = b"\x82" + msgpack.packb("t") + msgpack.packb("x") + msgpack.packb("y") + deep
    with pytest.raises(SchemaError, match="unknown message type"):
        parse(unknown_kind)


def test_what_a_peer_named_is_repeated_short_and_on_one_line() -> None:
    name = "x" * 100_000 + "\nINFO forged"
    with pytest.raises(SchemaError) as e:
        parse(msgpack.packb({"t": "ack", "tasks": [], name: 1}))
    assert "unknown field" in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 120


@pytest.mark.parametrize("gpus", [True, -1, 65, 2**63, 1.5, "4"])
def test_a_count_of_gpus_is_refused_naming_its_field_unless_a_small_whole_number(
    gpus: object,
) -> None:
    ask = {"rid": 1, "job": "j", "tasks": 1, "driver": "command", "model": None, "max_price": 1.0}
    with pytest.raises(SchemaError, match=r"^quote\?\.gpus: "):
        parse(msgpack.packb({"t": "quote?", **ask, "gpus": gpus}))
    commitment = Commitment(B.node_id, A.node_id, "j", ["j/0"], 0.5, 1.0).signed(B).to_wire()
    commit = {"t": "commit", "rid": 2, "commitment": {**commitment, "gpus": gpus}, "run": []}
    with pytest.raises(SchemaError, match=r"^commit\.commitment\.gpus: "):
        parse(msgpack.packb(commit, use_bin_type=True))
    with pytest.raises(SchemaError, match=r"^run\.tasks\[0\]\.gpus: "):
        parse(msgpack.packb({"t": "run", "tasks": [{**TASK, "gpus": gpus}]}))


def challenge_ask(**fields: object) -> dict:
    commitment = Commitment(B.node_id, A.node_id, "c", ["c/1"], 0.5, 1.0).signed(B).to_wire()
    return {"t": "challenge?", "rid": 1, "seed": b"s" * 32, "n": 64, "commitment": commitment} | (
        fields
    )


@pytest.mark.parametrize(
    ("message", "named"),
    [
        (challenge_ask(n=4097), r"^challenge\?\.n: Expected `int` <= 4096"),
        (challenge_ask(n=8), r"^challenge\?\.n: Expected `int` >= 16"),
        (challenge_ask(seed=b"short"), r"^challenge\?\.seed: Expected `bytes` of length >= 32"),
        (
            {"t": "challenge-open", "rid": 1, "rows": list(range(65))},
            r"^challenge-open\.rows: Expected `array` of length <= 64",
        ),
        ({"t": "challenge-open", "rid": 1, "rows": []}, r"^challenge-open\.rows: .* >= 1"),
        (
            {"t": "challenge-open", "rid": 1, "rows": [64 * 4096]},
            r"^challenge-open\.rows\[0\]: Expected `int` <= 262143",
        ),
        (challenge_ask(rounds=65), r"^challenge\?\.rounds: Expected `int` <= 64"),
        (challenge_ask(rounds=0), r"^challenge\?\.rounds: Expected `int` >= 1"),
        (challenge_ask(rounds="2"), r"^challenge\?\.rounds: Expected `int`, got `str`"),
        (
            {"t": "challenge-root", "rid": 1, "root": b"r" * 31, "seconds": 1.0},
            r"^challenge-root\.root: ",
        ),
    ],
    ids=[
        "n-too-big",
        "n-too-small",
        "seed",
        "rows-too-many",
        "no-rows",
        "row-past-all-rounds",
        "rounds-too-many",
        "no-rounds",
        "rounds-not-int",
        "root",
    ],
)
def test_a_challenge_message_out_of_its_bounds_is_refused_naming_its_field(
    message: dict, named: str
) -> None:
    with pytest.raises(SchemaError, match=named):
        parse(msgpack.packb(message, use_bin_type=True))


def test_opened_rows_larger_than_the_largest_product_row_are_refused() -> None:
    receipt = Receipt(A.node_id, B.node_id, "c", "c/1", True, result_hash(7), 1.0, 0.5, 2.0)
    rows = {"t": "challenge-rows", "rid": 1, "receipt": receipt.signed(A).to_wire()}
    too_long = rows | {"rows": [b"\0" * (4 * 4096 + 1)], "proofs": [[]]}
    with pytest.raises(SchemaError, match=r"^challenge-rows\.rows\[0\]: .* length <= 16384"):
        parse(msgpack.packb(too_long, use_bin_type=True))
    deep_proof = rows | {"rows": [b""], "proofs": [[b"h" * 32] * 19]}  # 64 rounds of 4096: 18
    with pytest.raises(SchemaError, match=r"^challenge-rows\.proofs\[0\]: .* length <= 18"):
        parse(msgpack.packb(deep_proof, use_bin_type=True))
    unsigned = rows | {"rows": [], "proofs": [], "receipt": receipt.to_wire()}
    with pytest.raises(SchemaError, match=r"challenge-rows\.receipt\.sig"):
        parse(msgpack.packb(unsigned, use_bin_type=True))
