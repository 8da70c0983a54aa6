"""Writing files so that nothing is ever half-written, and naming them portably.

Every file or directory the project produces (checkpoints, eval reports, latent
caches, training state, encoders) goes through :func:`atomic_file` or
:func:`atomic_directory`: a reader sees the old version or the new one, a crash or an
error leaves the old one, and two writers never share a temporary name.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def portable_path(path: str | Path) -> str:
    """``path`` as written into checkpoints and reports: relative to the working directory
    where it lies inside it (so files made in a project tree name no machine's absolute
    paths), else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A unique temporary sibling of ``path`` to write; on success it is renamed onto
    ``path`` (a reader sees the old file or the new one, never half of one), on any error
    it is removed and ``path`` is left as it was. Unique names keep two writers apart."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False) -> None:
    """``data`` as indented JSON at ``path``, written through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys))


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Fill a temporary sibling of ``target``; on success it replaces ``target`` by
    rename, on any error it is removed and ``target`` is left as it was. The directory
    is made by ``mkdir`` under a unique name, so it gets the usual permissions (0777
    less the umask), not mkdtemp's private 0700."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()  # fails rather than reuse an existing directory
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
