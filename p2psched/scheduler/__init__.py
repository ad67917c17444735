"""The scheduler role: a job spec becomes tasks (`job`), which wait in a queue ordered by
their latest start (`queue`), find their workers in the DHT (`discovery`, reading `ads`), and
are negotiated, dispatched, tracked and retried by one sans-I/O run per job (`run`), which
picks workers by a `strategy` and expects their speed from a `predictor`. The node's jobs are
kept in `jobs` and driven over their links by the trio shell in `service`."""

from __future__ import annotations
