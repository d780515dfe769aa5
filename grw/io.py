"""Writing results safely and readably: atomic files and folders, aligned text tables."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_path", "save_atomic", "text_table", "write_atomic"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write a file or a folder into; renamed onto ``path`` when the block succeeds.

    On an error the temporary is removed and ``path`` is untouched, so nothing ever looks complete
    that is not. A folder cannot replace a non-empty folder: the rename then raises ``OSError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """An aligned plain-text table; ``align`` has one ``l`` or ``r`` per column (default: first left, others right)."""
    cells = [[str(cell) for cell in row] for row in (header, *rows)]
    if any(len(row) != len(header) for row in cells):
        raise ValueError(f"every row needs {len(header)} cells, like the header {list(header)}")
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    justify = [str.ljust if a == "l" else str.rjust for a in align]
    return "\n".join("  ".join(j(c, w) for j, c, w in zip(justify, row, widths)).rstrip() for row in cells)
