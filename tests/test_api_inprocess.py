"""The control API in one process, over real loopback sockets: what needs the node's insides to
set up (a job no longer kept in memory, a forged Host header, a cut-short token file), that its
OpenAPI document describes every answer (errors too), and the terminal view's drawing of what
peers sent."""

from __future__ import annotations

from rich.console import Console

from p2psched.cli import top


def test_top_draws_what_peers_sent_as_text_not_markup() -> None:
    reason = "model server said: [/b] [red]boom[/red] [link=javascript:x]y[/link]"
    snap = {
        "at": 1.8e9,
        "errors": [],
        "node": {"node_id": "ab" * 32, "roles": ["scheduler"], "dht": "127.0.0.1:1"},
        "jobs": [],
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
