"""Where the project's files live, whether code runs from the repository root or from ``notebooks/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["project_path", "project_root"]


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding this project's ``pyproject.toml``.

    Falls back to ``start`` itself when there is none (an installed package used elsewhere).
    """
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "grw").is_dir():
            return folder
    return start


def project_path(path: str | Path) -> Path:
    """``path`` itself when absolute, else relative to :func:`project_root` (so ``runs/…`` and ``data/…`` land at the top)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path
