"""A node's home: the data directory that holds its key, its store and its API's files, and how
anything private is written there.

Promises: a data directory this code makes is mode 0700, and one it finds looser (a group or
others may enter it) is tightened to 0700, with a warning; one another user owns is refused
(PermissionError); files written through `write_private` are mode 0600 from their first byte,
and replace the old one all at once.
Apart from `identity` (which imports `cryptography`) so that a command finds the directory of
the node it asks without paying for keys it never loads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_log = logging.getLogger("p2psched.home")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def default_data_dir() -> Path:
    """`$P2PSCHED_HOME` if set, else `~/.p2psched`."""
    env = os.environ.get("P2PSCHED_HOME")
    return Path(env).expanduser() if env else Path.home() / ".p2psched"


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter: made 0700 (its missing parents with the
    usual mode), or, if it is looser, tightened to 0700 with a warning; PermissionError if it
    is another user's."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    st = path.stat()
    if st.st_uid != os.geteuid():
        # Its owner could swap or read what we write there (a path another user made first).
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): "
            "its owner could read or replace this node's files; use a directory of your own"
        )
    if st.st_mode & 0o077:
        # Another local user could read what an older version or a umask left readable.
        _log.warning(
            "%s was mode %o: tightened to 0700 (other local users could read its files)",
            path,
            st.st_mode & 0o777,
        )
        path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as mode 0600: through a new file renamed over the old one, so no
    reader sees it half written and no one else can open it even for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)
