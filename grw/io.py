"""Writing results safely and readably: atomic files and folders, checkpoints that never run code, aligned text tables."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnreadableCheckpoint", "atomic_path", "check_unlocked", "check_writable", "folder_lock",
           "load_checkpoint", "lock_holder", "remove_temporaries", "save_atomic", "temporaries", "text_table",
           "write_atomic"]


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that is truncated, corrupt, or holds objects other than tensors and plain values."""


def _temporary(path: Path, pid: int | str) -> Path:
    return path.with_name(f".{path.name}.tmp{pid}")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | Path, *, previous: str | Path | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write a file or a folder into; renamed onto ``path`` when the block succeeds.

    On an error the temporary is removed and ``path`` is untouched, so nothing ever looks complete
    that is not. A written file is on disk (fsync) before its name points at it. With ``previous``,
    the file ``path`` held is kept there. A folder cannot replace a non-empty folder: the rename then
    raises ``OSError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, os.getpid())
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_file():
            _fsync(tmp)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        _fsync(path.parent)  # the renames themselves survive a power cut
    finally:
        _remove(tmp)


def temporaries(path: str | Path) -> list[Path]:
    """The temporaries :func:`atomic_path` left beside ``path`` (other processes' or killed ones'), newest first."""
    path = Path(path)
    found = [p for p in path.parent.glob(f".{path.name}.tmp*") if p != _temporary(path, os.getpid())]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def remove_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left beside ``path`` when its process was killed; returns them.

    Call it only where no other process is writing ``path`` (e.g. a run's own output folder at its start).
    """
    stale = temporaries(path)
    for p in stale:
        _remove(p)
    return stale


def save_atomic(obj: Any, path: str | Path, *, previous: str | Path | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (the file it replaces kept as ``previous``, if given)."""
    with atomic_path(path, previous=previous) as tmp:
        torch.save(obj, tmp)


def check_writable(path: str | Path, what: str = "output file") -> Path:
    """``path`` as a Path once a file can be written there (its folder existing or creatable); a ValueError naming it
    otherwise. Creates nothing: a command checks its output files before any work."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"the {what} {path} is a folder: give a file name")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"the {what} {path} cannot be written: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"the {what} {path} cannot be written: no permission to write in {ancestor}")
    return path


LOCK = ".lock"  # the file a run holds locked in its folder


def _lock(handle: Any) -> bool:
    """Take an exclusive advisory lock on the open file ``handle`` without waiting; False if another holds it."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform (Windows): folders are not guarded
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _in_use(folder: str | Path, holder: str) -> ValueError:
    return ValueError(f"{folder} is in use by another run ({holder or 'another process'}): wait for it to end, or give "
                      "another --out-dir")


def check_unlocked(folder: str | Path) -> None:
    """Refuse ``folder`` while another process holds it (:func:`folder_lock`), naming the holder. Changes nothing."""
    holder = lock_holder(folder)
    if holder is not None:
        raise _in_use(folder, holder)


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock (see :func:`folder_lock`), or ``None`` when no process does. Changes nothing."""
    path = Path(folder) / LOCK
    if not path.is_file():
        return None
    with open(path, "r+") as handle:
        if _lock(handle):
            return None  # released when the file closes
        return handle.read().strip() or "another process"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for one process while the block runs; a second is refused at once.

    An exclusive advisory lock on ``folder/.lock``, which the operating system releases when the holder ends, however
    it ends (a kill included): nothing stale is left to clean up. A ValueError names the holder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        if not _lock(handle):
            handle.seek(0)
            raise _in_use(folder, handle.read().strip())
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_checkpoint(path: str | Path) -> Any:
    """The tensors and plain values saved at ``path``, on the CPU; never runs code a file carries (``weights_only``).

    Raises :class:`UnreadableCheckpoint` (one line saying why) for a truncated or corrupt file, or one
    that holds other objects, and ``FileNotFoundError`` when there is no file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise UnreadableCheckpoint(f"{path} is corrupt ({error})") from error
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise UnreadableCheckpoint(
            f"{path} holds objects other than tensors and plain values, and loading them could run code, so it was "
            f"not loaded{f' (it calls for {refused[1]})' if refused else ''}; a checkpoint must be a state dict of tensors"
        ) from error
    except (EOFError, RuntimeError, OSError, KeyError, ValueError, IndexError) as error:  # what garbage bytes raise
        reason = str(error).split(". ")[0] or type(error).__name__
        raise UnreadableCheckpoint(f"{path} is truncated or corrupt ({reason})") from error


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """An aligned plain-text table; ``align`` has one ``l`` or ``r`` per column (default: first left, others right)."""
    cells = [[str(cell) for cell in row] for row in (header, *rows)]
    if any(len(row) != len(header) for row in cells):
        raise ValueError(f"every row needs {len(header)} cells, like the header {list(header)}")
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    justify = [str.ljust if a == "l" else str.rjust for a in align]
    return "\n".join("  ".join(j(c, w) for j, c, w in zip(justify, row, widths)).rstrip() for row in cells)
