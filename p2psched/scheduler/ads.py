"""A worker's ad as a scheduler reads it back from the DHT (`WorkerAd`), and the one JSON shape
in which the CLI, the API and the dashboard show it. Sans-I/O: the run's core holds ads.

Promises: `WorkerAd.from_record` gives an ad only for a well-formed profile within its size
limit, from a publisher whose id shows the network's work (the id puzzle), stored under a key
its publisher's profile is really published under, whose addresses are IP literals or relay
addresses (None for a withdrawal), else raises ValueError saying why.
`check_ad_record` is the same check as a DHT holder makes it (the node injects it into its
record store): plus a lifetime of at most `MAX_AD_LIFETIME`, and private addresses only from a
publisher seen in the same kind of range. `VerifiedAds` holds ads whose signature checked, by
that signature: a hit is the very record that was checked, and nothing unchecked gets in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from p2psched.dht.records import Record
from p2psched.identity import id_has_work, network_id_bits
from p2psched.resources.need import MAX_AD_LIFETIME, capability_keys, is_ad_key
from p2psched.resources.profile import MAX_PROFILE_BYTES, Profile
from p2psched.wire.address import ad_address_problem
from p2psched.wire.codec import DecodeError, decode
from p2psched.wire.schema import SchemaError

# Ads a scheduler keeps after their signature checked: enough for every worker of a large
# swarm (about 100 bytes each besides the record it holds anyway).
VERIFIED_ADS = 4096


def ad_json(ad: WorkerAd, now: float) -> dict[str, Any]:
    """An ad as JSON, the one shape the CLI and the API show."""
    p = ad.profile
    gpus = [
        {"model": g.model, "family": g.family, "vram_gb": g.vram_gb, "driver": g.driver}
        for g in p.gpus
    ]
    return {
        "node_id": ad.node_id.hex(),
        "gpus": gpus,
        "ram_gb": p.ram_gb,
        "cpu": {"model": p.cpu_model, "cores": p.cpu_cores},
        "disk_gb": p.disk_gb,
        "models": list(p.installed_models),
        "loaded_models": list(p.loaded_models),
        "price": p.min_price,
        "drivers": list(p.drivers),
        "free_slots": p.free_slots,
        "workload": {
            "cpu": p.workload_cpu,
            "ram": p.workload_ram,
            "gpu": p.workload_gpu,
            "vram": p.workload_vram,
        },
        "labels": dict(p.labels),
        "addresses": list(p.addresses),
        "expires_in": round(ad.expires - now, 1),
    }


@dataclass(frozen=True, slots=True)
class WorkerAd:
    node_id: bytes
    profile: Profile
    seq: int
    expires: float  # seconds since the epoch

    @classmethod
    def from_record(cls, record: Record) -> WorkerAd | None:
        """The ad a record carries; None for a withdrawal. Raises ValueError for a bad one."""
        publisher_id = record.publisher_id
        if not id_has_work(publisher_id, network_id_bits()):
            # The shard an ad lands in is a hash of its publisher's id: free ids would grind it.
            raise ValueError("publisher's id shows no work (id puzzle)")
        if not record.value:
            return None
        if len(record.value) > MAX_PROFILE_BYTES:
            raise ValueError("oversized")
        try:
            profile = Profile.from_wire(decode(record.value, MAX_PROFILE_BYTES))
        except (DecodeError, SchemaError) as e:
            raise ValueError(f"malformed ({e})") from None
        if record.key not in capability_keys(profile, publisher_id).values():
            raise ValueError("misplaced: not a key this profile is published under")
        for address in profile.addresses:
            if (problem := ad_address_problem(address, None)) is not None:
                raise ValueError(f"address: {problem}")
        return cls(publisher_id, profile, record.seq, record.expires_ms / 1000)


def check_ad_record(record: Record, source: str | None, now: float) -> str | None:
    """Why a DHT holder must not store `record`, sent from host `source` (None: its own), if it
    is under an ad key; None when it may (and for every other key)."""
    if not is_ad_key(record.key):
        return None
    if record.expires_ms > (now + MAX_AD_LIFETIME) * 1000:
        return f"an ad's expiry is at most {MAX_AD_LIFETIME:.0f}s ahead"
    try:
        ad = WorkerAd.from_record(record)
    except ValueError as e:
        return f"not a worker's ad: {e}"[:200]
    if ad is not None and source is not None:
        for address in ad.profile.addresses:
            if (problem := ad_address_problem(address, source)) is not None:
                return problem[:200]
    return None


class VerifiedAds:
    """Ads whose record's signature checked, by that signature; past `size` the least recently
    used goes. A hit needs the whole record equal to the one checked, so a record that reuses a
    genuine signature over other fields misses it; only a record that verifies is added, so a
    forgery neither becomes an entry nor displaces one. A changed ad has a new signature: it is
    checked anew."""

    def __init__(self, size: int = VERIFIED_ADS) -> None:
        if size < 1:
            raise ValueError(f"verified ads cache size {size}: give at least 1")
        self.size = size
        self._ads: OrderedDict[bytes, tuple[Record, WorkerAd]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ads)

    def get(self, record: Record) -> WorkerAd | None:
        """The ad `record` carries, if this very record was checked before; else None."""
        held = self._ads.get(record.signature)
        if held is None or held[0] != record:
            return None
        self._ads.move_to_end(record.signature)
        return held[1]

    def check(self, record: Record, ad: WorkerAd) -> bool:
        """Whether `record`, which carries `ad`, is signed by its publisher (kept if it is)."""
        if self.get(record) is not None:
            return True
        if not record.verify():
            return False
        self._ads[record.signature] = (record, ad)
        if len(self._ads) > self.size:
            self._ads.popitem(last=False)
        return True
