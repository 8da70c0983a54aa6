"""Writing files so that nothing is ever half-written, locking run directories, and
naming files portably.

Every file or directory the project produces (checkpoints, eval reports, latent
caches, training state, encoders) goes through :func:`atomic_file` or
:func:`atomic_directory`: a reader sees the old version or the new one, a crash or an
error leaves the old one, and two writers never share a temporary name.

A command that writes a run directory (``train``, ``pretrain-encoder``, ``eval``) holds
its lock (:func:`run_lock`) while it runs, so a second run into the same directory is
refused, naming the first; a killed run's lock is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jepa_robot.errors import RunLockedError

log = logging.getLogger(__name__)

LOCK_FILE = ".jepa-robot.lock"
"""The lock file of a run directory; it holds the current holder's pid, host, start time and command."""
_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]+$")


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


def recover_directory(target: str | Path) -> None:
    """Undo what a process killed inside :func:`atomic_directory` left: if ``target`` is
    gone but its previous version was set aside (``.<name>.old-<pid>``), put that back;
    remove other set-aside copies. Call it only while holding the run's lock."""
    target = Path(target)
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not target.exists() and olds:
        os.replace(olds.pop(), target)
        log.warning("restored %s, which a killed run had set aside while replacing it", target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files and directories (``.<name>.tmp-<hex>``, ``.<name>.old-<pid>``)
    that killed writers left directly in ``directory``; returns what was removed. Call it
    only while holding the directory's lock, after :func:`recover_directory`."""
    directory = Path(directory)
    removed = []
    for path in directory.iterdir() if directory.is_dir() else []:
        if _TEMPORARY.match(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    return (
        f"{holder.get('command', 'a run')} (pid {holder.get('pid')} on host {holder.get('host')}, "
        f"started {holder.get('started')})"
    )


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", errors="replace").strip()
        holder = json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


@contextmanager
def run_lock(directory: str | Path, command: str) -> Iterator[Path]:
    """Hold ``directory``'s lock while the block runs (the directory is created if needed).

    The lock is ``fcntl.flock`` on ``directory/.jepa-robot.lock``: the kernel releases it
    when the holder exits, however it exits (``kill -9`` included), so a killed run's lock
    is simply taken over. The holder writes its pid, host, start time and ``command``
    into the file, and a second run is refused with :class:`RunLockedError` naming them.
    On a file system without ``flock`` the recorded holder decides: refused while its pid
    is alive on this host, taken over otherwise.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{directory} is in use by {_describe_holder(_read_holder(fd))}; wait for it to finish, "
                "or choose another out_dir"
            ) from None
        except OSError as error:  # no flock here (some network file systems)
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            holder = _read_holder(fd)
            if holder and holder.get("host") == socket.gethostname() and _pid_alive(int(holder.get("pid", -1))):
                raise RunLockedError(
                    f"{directory} is in use by {_describe_holder(holder)}; wait for it to finish, or choose another out_dir"
                ) from None
        previous = _read_holder(fd)
        if previous:
            log.warning("%s: taking over the lock of %s, which ended without releasing it", directory, _describe_holder(previous))
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: an empty lock file names no holder
    finally:
        os.close(fd)  # releases the flock
