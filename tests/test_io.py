"""Atomic files and folders, checkpoints that never run code, text tables."""

import os

import pytest
import torch

import grw.io
from grw.io import UnreadableCheckpoint, atomic_path, load_checkpoint, remove_temporaries, save_atomic, text_table, write_atomic


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


def test_the_replaced_file_is_kept_and_the_bytes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_atomic({"epoch": 1}, path, previous=previous)
    assert not previous.exists()
    events = []
    real_fsync, real_replace = grw.io._fsync, os.replace
    monkeypatch.setattr(grw.io, "_fsync", lambda p: events.append(("fsync", str(p))) or real_fsync(p))
    monkeypatch.setattr(grw.io.os, "replace", lambda a, b: events.append(("rename", str(a), str(b))) or real_replace(a, b))
    save_atomic({"epoch": 2}, path, previous=previous)
    tmp = str(tmp_path / f".checkpoint.pt.tmp{os.getpid()}")
    assert events == [("fsync", tmp), ("rename", str(path), str(previous)), ("rename", tmp, str(path)), ("fsync", str(tmp_path))]
    assert torch.load(path, weights_only=True) == {"epoch": 2} and torch.load(previous, weights_only=True) == {"epoch": 1}


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    stale = [tmp_path / ".checkpoint.pt.tmp123456", tmp_path / ".checkpoint.pt.tmp7"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    (tmp_path / ".metrics.jsonl.tmp123456").write_text("{}")  # another file's: not these
    assert sorted(remove_temporaries(path)) == sorted(stale)
    assert [p.name for p in tmp_path.iterdir()] == [".metrics.jsonl.tmp123456"]


def test_load_checkpoint_never_runs_code_and_names_what_is_wrong(tmp_path, code_running):
    hook, marker = code_running
    torch.save({"model": {"w": torch.ones(2)}, "hook": hook}, tmp_path / "evil.pt")
    with pytest.raises(UnreadableCheckpoint, match=r"evil.pt holds objects other than tensors .* could run code, so it was not loaded \(it calls for io.open\)"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()

    save_atomic({"model": {"w": torch.arange(3.0)}, "history": [{"loss": 0.5}]}, tmp_path / "good.pt")
    good = load_checkpoint(tmp_path / "good.pt")
    assert torch.equal(good["model"]["w"], torch.arange(3.0)) and good["history"] == [{"loss": 0.5}]
    whole = (tmp_path / "good.pt").read_bytes()
    for size in (0, 10, 300, len(whole) // 2):
        (tmp_path / "cut.pt").write_bytes(whole[:size])
        with pytest.raises(UnreadableCheckpoint, match=r"cut.pt is truncated or corrupt \(") as error:
            load_checkpoint(tmp_path / "cut.pt")
        assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_text_table_aligns_columns():
    table = text_table(("model", "top-1", "note"), [("a0", 72.3, "base"), ("a0-stream", 78.4, "")], align="lrl")
    assert table.splitlines() == [
        "model      top-1  note",
        "a0          72.3  base",
        "a0-stream   78.4",
    ]
    with pytest.raises(ValueError, match="every row needs 3 cells"):
        text_table(("a", "b", "c"), [(1, 2)])


@pytest.mark.parametrize("garbage", [b"half", b"\x80\x02h\x61.", b"PK\x03\x04" + bytes(40), b""])
def test_any_bytes_that_are_not_a_checkpoint_are_one_clear_error(tmp_path, garbage):
    from grw.io import UnreadableCheckpoint, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(garbage)
    with pytest.raises(UnreadableCheckpoint, match="checkpoint.pt is"):
        load_checkpoint(path)
