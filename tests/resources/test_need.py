"""Needs and capability keys: parsing and its errors, every matching worker found under a
need's search keys, and the most selective capability searched."""

from __future__ import annotations

import os
import random

import pytest

from p2psched.resources.need import Need, NeedError, capability_keys
from tests.harness.profiles import NEEDS, random_profile


def test_need_parsing_and_its_errors() -> None:
    need = Need.parse(
        "gpu=A100, vram>=40,ram>=16,model=llama-3-8b,driver=http,max_price<=0.02,label.region=eu"
    )
    assert (
        str(need)
        == "gpu=A100,vram>=40,ram>=16,model=llama-3-8b,driver=http,max_price<=0.02,label.region=eu"
    )
    assert Need.parse("").clauses == ()
    for bad, says in [
        ("vram>=lots", "takes a number"),
        ("colour=red", "unknown field 'colour'"),
        ("gpu>=A100", "only be compared with '='"),
        ("vram", "is not FIELD OP VALUE"),
    ]:
        with pytest.raises(NeedError, match=says):
            Need.parse(bad)


def test_every_matching_worker_is_stored_under_its_needs_search_keys() -> None:
    """The promise discovery rests on: search the need's keys, filter, and nobody is missed."""
    rng = random.Random(7)
    workers = [(os.urandom(32), random_profile(rng)) for _ in range(500)]
    for text in NEEDS:
        need = Need.parse(text)
        capability, search = need.search_keys()
        matching = [(i, p) for i, p in workers if need.matches(p)]
        for node_id, p in matching:
            stored = capability_keys(p, node_id)
            assert stored[capability] in search
        # And the filter is exact: brute force agrees.
        assert len(matching) == sum(
            1 for _, p in workers if all(Need((c,)).matches(p) for c in need.clauses)
        )


def test_the_most_selective_capability_is_searched() -> None:
    assert Need.parse("ram>=16,gpu=A100,model=sdxl").search_keys()[0] == "model:sdxl"
    assert Need.parse("vram>=40,gpu=a100").search_keys()[0] == "gpu:A100"
    assert Need.parse("driver=http").search_keys()[0] == "driver:http"
    assert Need.parse("ram>=16").search_keys()[0] == "any"
    capability, keys = Need.parse("").search_keys()
    assert capability == "any" and len(set(keys)) == 16
