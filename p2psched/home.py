"""A node's home: the data directory that holds its key, its store and its API's files.

Apart from `identity` (which imports `cryptography`) so that a command finds the directory of
the node it asks without paying for keys it never loads.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$P2PSCHED_HOME` if set, else `~/.p2psched`."""
    env = os.environ.get("P2PSCHED_HOME")
    return Path(env).expanduser() if env else Path.home() / ".p2psched"
