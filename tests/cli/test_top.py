"""`p2psched top`: its refusals, and its drawing of what peers sent as text, not markup."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from p2psched.cli import top
from tests.harness.processes import p2psched


def test_top_refuses_a_bad_interval_and_a_missing_node(tmp_path: Path) -> None:
    out = p2psched("top", "--interval", "0", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "--interval 0" in out.stderr
    out = p2psched("top", "--once", "--data-dir", str(tmp_path))
    assert out.returncode != 0 and "no node runs on" in out.stderr


def test_top_draws_what_peers_sent_as_text_not_markup() -> None:
    reason = "model server said: [/b] [red]boom[/red] [link=javascript:x]y[/link]"
    snap = {
        "at": 1.8e9,
        "errors": [],
        "node": {"node_id": "ab" * 32, "roles": ["scheduler"], "dht": "127.0.0.1:1"},
        "jobs": {"jobs": []},
        "queues": {"queues": []},
        "failures": {
            "failures": [
                {
                    "at": 1.8e9,
                    "task": "j/0",
                    "worker": "cd" * 32,
                    "reason": reason,
                    "outcome": "failed",
                }
            ]
        },  # fmt: skip
        "peers": {"peers": []},
    }
    console = Console(width=400, record=True)
    console.print(top.render(snap))  # a stray closing tag used to raise MarkupError
    assert reason in console.export_text()
