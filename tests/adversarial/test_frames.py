"""One small frame must not cost a node many times its size in memory: a frame of empty maps
(one byte each, 64 in Python) sent where a node decodes it. Measured as the peak resident
memory (VmHWM) of a real child process: its growth stays under 64 MB, and it keeps serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from p2psched.gate.client import open_control
from p2psched.identity import Identity
from p2psched.wire.channel import secure_stream
from p2psched.wire.hop_stream import read_frame, write_frame
from p2psched.wire.noise import ChannelError
from tests.harness.memory import BOMB, GROWTH_MB, empty_maps, peak_mb
from tests.harness.processes import EXE

# Decodes each shape of bomb in turn, in a fresh process, and prints its peak growth.
DECODER = r"""
import resource, sys
from p2psched.wire.codec import DecodeError, decode
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n = 16 << 20
shapes = {
    "one array": b"\xdd" + (n - 5).to_bytes(4, "big") + b"\x80" * (n - 5),
    "just under the item cap": b"\xdd" + (1 << 22).to_bytes(4, "big") + b"\x80" * (1 << 22),
    "lists of fifteen": b"\xdd" + (n // 16).to_bytes(4, "big")
    + (b"\x9f" + b"\x80" * 15) * (n // 16),
}
for name, frame in shapes.items():
    before = peak()
    try:
        decode(frame, max_size=n + 16)
        print(name, "decoded", flush=True)
    except DecodeError as e:
        print(name, "refused:", e, flush=True)
    print(name, "growth", peak() - before - len(frame) / 2**20, flush=True)
"""


def test_decoding_a_frame_of_empty_maps_stays_within_its_memory_bound() -> None:
    out = subprocess.run([sys.executable, "-c", DECODER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all("decoded" not in line for line in lines), lines
    growths = [float(line.rsplit(" ", 1)[1]) for line in lines if " growth " in line]
    assert len(growths) == 3 and max(growths) < GROWTH_MB, lines


async def test_a_16_mib_frame_on_a_gates_control_channel_is_refused_in_kilobytes(
    tmp_path: Path,
) -> None:
    """A fresh identity opens a control channel and sends one 16 MiB frame: the gate refuses
    it at its header (control messages are small), grows by far less than the frame, and
    gives the next peer its reservation."""
    argv = [*EXE, "gate", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "g")]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as gate:
        try:
            assert gate.stdout is not None
            host, port = gate.stdout.readline().split()[4].rsplit(":", 1)
            address = (host, int(port))
            await trio.sleep(0.5)
            before = peak_mb(gate.pid)
            stream = await trio.open_tcp_stream(*address)
            hello = await read_frame(stream, "hello")
            await write_frame(stream, {"t": "control"})
            await read_frame(stream, "ok")
            attacker = Identity.generate()
            refused = False
            async with secure_stream(
                stream, attacker, initiator=True, expected_peer=hello["gate"], max_frame=BOMB
            ) as channel:
                try:
                    await channel.send_encoded([empty_maps(BOMB - 64)])
                    await channel.receive()
                except ChannelError:
                    refused = True
            assert refused
            await trio.sleep(0.5)
            # Refused at its header: the gate never held the frame (16 MiB), let alone its maps.
            assert peak_mb(gate.pid) - before < 8
            async with open_control(address, Identity.generate()) as honest:
                await honest.send({"t": "reserve"})
                assert (await honest.receive())["t"] == "reserved"
        finally:
            gate.terminate()
            gate.wait(timeout=20)
