"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest


class _CodeRunning:
    """Unpickling it creates a file: a checkpoint that runs code when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def code_running(tmp_path: Path) -> tuple[_CodeRunning, Path]:
    """An object whose unpickling creates a file, and that file's path (``tmp_path / "code-ran"``, absent)."""
    marker = tmp_path / "code-ran"
    return _CodeRunning(marker), marker
