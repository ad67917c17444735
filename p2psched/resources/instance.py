"""Task Instances, as the design documents' Scheduler API names them, in a network without a
central scheduler: a worker serving one model is one instance, and its UUID is derived from the
worker's node id and the model, so every node computes the same one from the worker's ad.

Promises: `instance_id` is stable (the same worker and model give the same UUID on any node,
before and after a restart) and tells nothing a reader could not already see in the ad.
"""

from __future__ import annotations

import uuid

# uuid5's namespace for Task Instance ids (itself uuid5 of the URL namespace and a name of ours).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "p2psched:task-instance")


def instance_id(worker: bytes, model: str) -> str:
    """The Task Instance id of `worker` (its node id) serving `model`, as text."""
    return str(uuid.uuid5(_NAMESPACE, f"{worker.hex()}/{model}"))
