"""Atomic files and folders, text tables."""

import pytest
import torch

from grw.io import atomic_path, save_atomic, text_table, write_atomic


def test_save_atomic_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1}, path)

    def broken_save(obj, f):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"epoch": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "dataset"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "train.npz").write_bytes(b"part")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "params.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"] and (target / "params.json").read_text() == "{}"
    write_atomic(tmp_path / "results.json", "[1]\n")
    write_atomic(tmp_path / "results.json", "[2]\n")
    assert (tmp_path / "results.json").read_text() == "[2]\n" and len(list(tmp_path.iterdir())) == 2


def test_text_table_aligns_columns():
    table = text_table(("model", "top-1", "note"), [("a0", 72.3, "base"), ("a0-stream", 78.4, "")], align="lrl")
    assert table.splitlines() == [
        "model      top-1  note",
        "a0          72.3  base",
        "a0-stream   78.4",
    ]
    with pytest.raises(ValueError, match="every row needs 3 cells"):
        text_table(("a", "b", "c"), [(1, 2)])
