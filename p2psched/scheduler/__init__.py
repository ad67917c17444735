"""The scheduler role: finding workers (and, next, queueing, negotiating and dispatching)."""

from __future__ import annotations
