"""Writing files safely: a path checked before any work (never an existing file without ``overwrite``), and data
written to a temporary file and renamed into place, so an interrupted write leaves no half-written file. Used by the
exports, the widget's GIF download and the adapter cache."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def writable(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a Path, checked before any work is done: an existing file is replaced only with ``overwrite``."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; pass a file path such as {str(out / 'layers.gif')!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; pass overwrite=True to replace it, or choose another path"
        )
    return out


_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it), and put back
os.umask(_UMASK)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place: an export interrupted
    half-way leaves no half-written file (and never a damaged version of the one it was replacing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; a written file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
