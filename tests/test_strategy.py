"""Each strategy's choice on crafted candidates, and every strategy (late binding through its
own reserve/ready protocol) running whole jobs between the real scheduler and worker cores."""

from __future__ import annotations

from p2psched.scheduler.lifecycle import TaskState

S = TaskState
