"""`p2psched top`: the running node at a glance in the terminal, refreshed, from its control API
(the same calls the web dashboard makes).

Owns: taking one snapshot of the node (`snapshot`), drawing it (`render`), and the refresh loop.
Promises: a call the node refuses or cannot answer shows as a line saying so in the view, not
as a crash; `--once` draws one frame and returns, for scripts and tests.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from p2psched.api.client import ApiCallError, ControlClient, NodeUnreachable

JOBS_SHOWN = 12
FAILURES_SHOWN = 8


def snapshot(client: ControlClient) -> dict[str, Any]:
    """What the view shows, each part fetched on its own: one failing does not hide the rest."""
    parts = {
        "node": ("/v1/node", {}),
        "jobs": ("/v1/jobs", {}),
        "queues": ("/v1/queue/info", {}),
        "failures": ("/v1/failures", {"limit": FAILURES_SHOWN}),
        "peers": ("/v1/peers", {}),
    }
    out: dict[str, Any] = {"at": time.time(), "errors": []}
    for name, (path, params) in parts.items():
        try:
            out[name] = client.get(path, **params)
        except (ApiCallError, NodeUnreachable) as e:
            out[name] = None
            out["errors"].append(f"{path}: {e}")
    if out["node"] and "gate" in out["node"].get("roles", []):
        try:
            out["gate"] = client.get("/v1/gate")
        except (ApiCallError, NodeUnreachable) as e:
            out["errors"].append(f"/v1/gate: {e}")
    return out


def _plain(value: Any) -> Text:
    """A cell as the text it is: what peers sent (a failure's reason) is never rich markup."""
    return Text("" if value is None else str(value))


def _bar(done: int, failed: int, total: int, width: int = 24) -> Text:
    total = max(total, 1)
    ok = round(width * done / total)
    bad = min(width - ok, round(width * failed / total))
    bar = Text("█" * ok, style="green")
    bar.append("█" * bad, style="red")
    bar.append("·" * (width - ok - bad), style="dim")
    return bar


def render(snap: dict[str, Any]) -> Group:
    parts: list[Any] = []
    node = snap.get("node") or {}
    head = Text(f"p2psched node {str(node.get('node_id', '?'))[:16]}…", style="bold")
    head.append(f"  roles {', '.join(node.get('roles', []))}  dht {node.get('dht', '?')}")
    peers = (snap.get("peers") or {}).get("peers", [])
    head.append(f"  peers {len(peers)}")
    if node.get("reachability"):
        head.append(f"  reachability {node['reachability']}")
    head.append(f"  {time.strftime('%H:%M:%S', time.localtime(snap['at']))}", style="dim")
    parts.append(head)

    jobs = Table(title="jobs", title_justify="left", expand=True)
    for col, justify in (("job", "left"), ("state", "left"), ("progress", "left"),
                         ("done", "right"), ("failed", "right"), ("running", "right"),
                         ("spent", "right"), ("eta", "right")):  # fmt: skip
        jobs.add_column(col, justify=justify)  # type: ignore[arg-type]
    listed = sorted(
        (snap.get("jobs") or {}).get("jobs", []), key=lambda j: -j.get("submitted_at", 0)
    )
    for j in listed[:JOBS_SHOWN]:
        eta = j.get("eta_s")
        jobs.add_row(
            _plain(j["job"]),
            _plain(j["state"]),
            _bar(j["completed"], j["failed"], j["total"]),
            _plain(f"{j['completed']}/{j['total']}"),
            _plain(j["failed"]),
            _plain(j["running"]),
            _plain(f"{j['spent']:g}"),
            _plain("" if eta is None else f"{eta:.0f}s"),
        )
    if not listed:
        jobs.add_row(_plain("(no jobs on this node)"), *[_plain("")] * 7)
    parts.append(jobs)

    workers = Table(title="workers this node knows (predicted)", title_justify="left", expand=True)
    for col in ("worker", "wait ms", "± ms", "run ms", "ok", "failed", "state", "source"):
        workers.add_column(col, justify="left" if col in ("worker", "state", "source") else "right")
    for q in (snap.get("queues") or {}).get("queues", []):
        view = q.get("view") or {}
        workers.add_row(
            _plain(q["ti_uuid"][:16]),
            _plain(f"{q['waiting_time_expect']:.0f}"),
            _plain(f"{q['waiting_time_error']:.0f}"),
            _plain(f"{q['run_time_expect']:.0f}"),
            _plain(view.get("succeeded_tasks", "")),
            _plain(view.get("failed_tasks", "")),
            _plain(view.get("state", "")),
            _plain(q.get("source", "")),
        )
    parts.append(workers)

    gate = snap.get("gate")
    if gate:
        c = gate.get("counters", {})
        line = Text(f"relay {gate['relay']}: ", style="bold")
        line.append(
            f"{len(gate['reservations'])} reservations, {len(gate['circuits'])} circuits, "
            f"{c.get('bytes_relayed', 0):,} bytes relayed, "
            f"{c.get('circuits_refused', 0) + c.get('reservations_refused', 0)} refusals"
        )
        parts.append(line)

    fails = Table(title="recent failures", title_justify="left", expand=True)
    for col in ("when", "task", "worker", "reason"):
        fails.add_column(col, overflow="fold" if col == "reason" else "ellipsis")
    for f in (snap.get("failures") or {}).get("failures", []):
        when = time.strftime("%H:%M:%S", time.localtime(f["at"])) if f["at"] > 1e9 else ""
        fails.add_row(
            _plain(when), _plain(f["task"]), _plain((f["worker"] or "")[:16]), _plain(f["reason"])
        )
    parts.append(fails)
    for error in snap["errors"]:
        parts.append(Text(f"! {error}", style="red"))
    return Group(*parts)


def run(client: ControlClient, *, interval: float = 1.0, once: bool = False) -> None:
    console = Console()
    if once:
        console.print(render(snapshot(client)))
        return
    with Live(render(snapshot(client)), console=console, screen=False, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(client)), refresh=True)
        except KeyboardInterrupt:
            pass
