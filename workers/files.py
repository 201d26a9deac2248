"""Files written whole or not at all: every file segq writes that another process may read while it
is written (shards, manifests, checkpoints, keep-masks, the cluster state, secrets, results)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str, mode: int = 0o644) -> Iterator[Path]:
    """A temporary file beside `path` (the same directory, so the rename stays on one filesystem),
    created with `mode` before any byte is written (0o600 keeps a secret private on the way), for the
    block to write; renamed over `path` when the block ends, removed if it raises. A reader sees the
    old file or the whole new one, never a part."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        os.chmod(temporary, mode)
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: Path | str, data: str | bytes, mode: int = 0o644) -> Path:
    """`data` (text or bytes) as the whole of `path`, flushed to disk before it takes the name."""
    with atomic_path(path, mode) as temporary:
        with open(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)
