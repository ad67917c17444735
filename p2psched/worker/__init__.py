"""The worker role: its configuration, and its ad in the DHT."""

from __future__ import annotations
