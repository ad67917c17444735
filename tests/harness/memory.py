"""What a hostile peer's frame costs a node: the peak resident memory (VmHWM) of a real child
process, and the frames that try to raise it (the issue's 16 MiB of empty maps, one byte each
and 64 in Python, and a frame full of small lists of them)."""

from __future__ import annotations

from pathlib import Path

GROWTH_MB = 64  # what hostile frames may add to a node's peak memory, at most
BOMB = 16 << 20  # the largest frame anyone sends


def peak_mb(pid: int) -> float:
    """The peak resident memory of process `pid` so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def empty_maps(size: int) -> bytes:
    """A MessagePack array of empty maps, `size` bytes in all."""
    n = size - 5
    return b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n


def small_lists(size: int) -> bytes:
    """A MessagePack array of lists of fifteen empty maps, at most `size` bytes: sixteen
    containers in sixteen bytes."""
    n = (size - 5) // 16
    return b"\xdd" + n.to_bytes(4, "big") + (b"\x9f" + b"\x80" * 15) * n
