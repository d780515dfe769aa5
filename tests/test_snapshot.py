"""The authors' released GRW models: their temporal head, their snapshot format read safely, their logits reproduced."""

from __future__ import annotations

import os
import pickle
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import Tensor

from grw.models import GRWSnapshot, HeadParams, TemporalTransformerHead, load_grw_snapshot, read_grw_snapshot
from grw.models.positions import sinusoidal_positions
from grw.recipes.kinetics import PRESETS, get_preset

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "grw-snapshots"
SNAPSHOT = FIXTURES / "a0s_snapshot.pt"
needs_fixtures = pytest.mark.skipif(
    not SNAPSHOT.is_file(), reason=f"the A0S snapshot written by the authors' code is not at {FIXTURES}"
)
ATTENTION = "grw_smoothing_models.model.attention"
BACKBONES = "grw_smoothing_models.backbones.movinets"


def _relative_error(got: Tensor, want: Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


# --------------------------------------------------------------------------------------------
# The temporal head, as released
# --------------------------------------------------------------------------------------------


def _their_positions(n: int, dim: int) -> Tensor:
    """Their ``posemb_sincos_1d``, written out: frequencies ``10000 ** -(i / (dim/2 - 1))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2) / (dim // 2 - 1))
    angles = torch.arange(n)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def test_position_code_has_their_frequencies_for_the_head_and_movinets_otherwise() -> None:
    positions = torch.arange(50)
    torch.testing.assert_close(sinusoidal_positions(positions, 256, endpoint=True), _their_positions(50, 256))
    lowest = sinusoidal_positions(positions, 256)[:, 127]  # MoViNet's: one step above 1 / 10000
    torch.testing.assert_close(lowest, (positions * 10000 ** (-127 / 128)).sin())
    with pytest.raises(ValueError, match="even width of at least 4"):
        sinusoidal_positions(positions, 2, endpoint=True)


def test_head_adds_their_position_code_then_norm_mean_linear() -> None:
    torch.manual_seed(0)
    head = TemporalTransformerHead(16, 5, depth=0).eval()
    for param in head.parameters():
        torch.nn.init.normal_(param)
    x = torch.randn(2, 10, 16)
    pooled = head.norm(x + _their_positions(10, 16)).mean(dim=1)
    torch.testing.assert_close(head(x), head.classifier(pooled))


def _pooled_features(head: TemporalTransformerHead, x: Tensor) -> Tensor:
    """What enters the head's last dropout."""
    seen: list[Tensor] = []
    handle = head.dropout.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    head(x)
    handle.remove()
    return seen[0]


def test_head_drops_out_only_before_the_final_linear() -> None:
    torch.manual_seed(0)
    head = TemporalTransformerHead(16, 5, depth=2, num_heads=2, dropout=0.5)
    x = torch.randn(4, 10, 16)
    evaluated = _pooled_features(head.eval(), x)
    trained = _pooled_features(head.train(), x)
    torch.testing.assert_close(trained, evaluated)  # no dropout inside attention or the MLP
    assert not torch.allclose(head.train()(x), head.eval()(x))  # but before the linear


def test_head_stochastic_depth_drops_both_residual_branches() -> None:
    torch.manual_seed(0)
    head = TemporalTransformerHead(16, 5, depth=2, num_heads=2, stochastic_depth=1.0).train()
    x = torch.randn(4, 10, 16)
    pooled = head.norm(x + _their_positions(10, 16)).mean(dim=1)  # every block reduced to its skip connections
    torch.testing.assert_close(head(x), head.classifier(pooled))
    assert not torch.allclose(head.eval()(x), head.classifier(pooled))


# --------------------------------------------------------------------------------------------
# The released snapshot written by their code
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected() -> dict[str, object]:
    return torch.load(FIXTURES / "a0s_expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def snapshot() -> GRWSnapshot:
    return read_grw_snapshot(SNAPSHOT)


@needs_fixtures
def test_snapshot_contents(snapshot: GRWSnapshot) -> None:
    assert (snapshot.variant, snapshot.T, snapshot.num_samples) == ("a0s", 5, 123456)
    assert snapshot.head == HeadParams(embed_dim=256, depth=1, num_heads=4, mlp_dim=512, num_classes=600)
    assert snapshot.ema_state is not None and "n_averaged" not in snapshot.ema_state
    assert snapshot.ema_state.keys() == snapshot.model_state.keys()


@needs_fixtures
@pytest.mark.parametrize("ema", [False, True], ids=["raw", "ema"])
def test_released_model_gives_their_logits_and_Z(ema: bool, expected: dict[str, object]) -> None:
    model = load_grw_snapshot(SNAPSHOT, ema=ema)
    assert not model.training
    suffix = "_ema" if ema else ""
    video = expected["video"].permute(0, 2, 1, 3, 4)  # theirs [B, N, 3, H, W] → [B, 3, N, H, W]
    with torch.no_grad():
        logits, Z = model(video)
    assert _relative_error(logits, expected["logits" + suffix]) <= 1e-4
    assert _relative_error(Z, expected["Z" + suffix]) <= 1e-4
    other = "" if ema else "_ema"  # the raw and EMA weights differ: each flag gives its own logits
    assert _relative_error(logits, expected["logits" + other]) > 1e-2


def test_presets_are_the_released_models() -> None:
    table = {name: (p.model, p.stream, p.fps, p.frames, p.resize, p.crop, p.T) for name, p in PRESETS.items()}
    assert table == {
        "a0s": ("a0", True, 5.0, 50, 200, 172, 5),
        "a1s": ("a1", True, 5.0, 50, 200, 172, 5),
        "a2s": ("a2", True, 5.0, 50, 256, 224, 5),
        "a3b": ("a3", False, 12.0, 120, 300, 256, 6),
    }
    assert all(p.frames % p.T == 0 and p.frames / p.fps == 10 for p in PRESETS.values())  # whole windows, 10-s clips
    assert get_preset("A3B") is PRESETS["a3b"]
    with pytest.raises(ValueError, match="unknown preset 'a4s': expected one of a0s, a1s, a2s, a3b"):
        get_preset("a4s")


@needs_fixtures
def test_a0s_preset_builds_the_snapshots_model(snapshot: GRWSnapshot) -> None:
    preset = get_preset(snapshot.variant)
    assert (preset.model, preset.stream, preset.T) == ("a0", True, snapshot.T)
    head = snapshot.head
    assert (preset.embed_dim, preset.head_depth, preset.head_heads, preset.head_mlp_dim) == (
        head.embed_dim, head.depth, head.num_heads, head.mlp_dim
    )


# --------------------------------------------------------------------------------------------
# Snapshots that must be refused
# --------------------------------------------------------------------------------------------


def _authors_class(monkeypatch: pytest.MonkeyPatch, path: str) -> type:
    """A class that pickles as ``path`` (``module.Name``), as if the authors' package were importable."""
    module, _, name = path.rpartition(".")
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(name, (), {"__module__": module})
    setattr(sys.modules[module], name, cls)
    return cls


def _write_snapshot(
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    snapshot: GRWSnapshot,
    *,
    backbone: str = f"{BACKBONES}.a0s.a0s_backbone.MovinetBackbone",
    **overrides: object,
) -> Path:
    """A snapshot as their ``ActionRecognitionModel.save`` writes it, from the fixture's weights, with ``overrides``."""
    params = _authors_class(monkeypatch, f"{ATTENTION}.TransformerParams")()
    params.__dict__.update(vars(snapshot.head))
    content = {
        "model_state": dict(snapshot.model_state),
        "ema_weights": {"n_averaged": torch.tensor(3), **{f"module.{k}": v for k, v in snapshot.ema_state.items()}},
        "num_samples": snapshot.num_samples,
        "transformer_params": params,
        "backbone": _authors_class(monkeypatch, backbone),
        "T": snapshot.T,
        "version": 10,
    }
    torch.save(content | overrides, path)
    return path


class MakesDirectory:
    """Unpickles by creating ``marker``: what an arbitrary object in a pickle can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@needs_fixtures
def test_unknown_pickled_object_is_refused_and_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot
) -> None:
    pickle.loads(pickle.dumps(MakesDirectory(tmp_path / "plain")))
    assert (tmp_path / "plain").is_dir()  # the payload works on a plain unpickler
    marker = tmp_path / "marker"
    path = _write_snapshot(tmp_path / "bad.pt", monkeypatch, snapshot, extra=MakesDirectory(marker))
    global_name = re.escape(f"{os.mkdir.__module__}.mkdir")
    with pytest.raises(ValueError, match=f"refusing .*bad.pt: it refers to '{global_name}'.*nothing in it was run"):
        load_grw_snapshot(path)
    assert not marker.exists()


@needs_fixtures
def test_backbone_of_another_model_family_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot
) -> None:
    name = f"{BACKBONES}.a4s.a4s_backbone.MovinetBackbone"
    path = _write_snapshot(tmp_path / "a4s.pt", monkeypatch, snapshot, backbone=name)
    with pytest.raises(ValueError, match=f"it refers to '{re.escape(name)}'"):
        read_grw_snapshot(path)


@needs_fixtures
def test_variant_named_against_other_weights_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot
) -> None:
    # Their released files were pickled under older module paths such as this one; the name is what counts.
    name = "video_retrieval.backbones.movinets.a2s_v10.movineta2s_v10_backbone.MovinetBackbone"
    path = _write_snapshot(tmp_path / "a2s.pt", monkeypatch, snapshot, backbone=name)
    with pytest.raises(ValueError, match="names MoViNet a2s, but the weights in its model_state are those of a0s"):
        read_grw_snapshot(path)


@needs_fixtures
def test_missing_weights_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot) -> None:
    head_gone = {k: v for k, v in snapshot.model_state.items() if k != "attention.linear_head.weight"}
    path = _write_snapshot(tmp_path / "head.pt", monkeypatch, snapshot, model_state=head_gone)
    with pytest.raises(ValueError, match=r"(?s)raw weights of .*head.pt do not fit .*missing: \['attention.linear_head.weight'\]"):
        load_grw_snapshot(path)
    load_grw_snapshot(path, ema=True)  # the EMA weights are complete

    block = "video_backbone._encoder.blocks.b1_l0.project.conv_1.conv2d.weight"
    trunk_gone = {k: v for k, v in snapshot.model_state.items() if k != block}
    path = _write_snapshot(tmp_path / "trunk.pt", monkeypatch, snapshot, model_state=trunk_gone)
    with pytest.raises(ValueError, match=r"(?s)MoViNet weights \(video_backbone._encoder.\*\) of .*trunk.pt: .*1 missing"):
        load_grw_snapshot(path)

    path = _write_snapshot(tmp_path / "no_ema.pt", monkeypatch, snapshot, ema_weights=None)
    with pytest.raises(ValueError, match="holds no EMA weights"):
        load_grw_snapshot(path, ema=True)


@needs_fixtures
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": 9}, "version 9 snapshot; only version 10"),
        ({"T": "5"}, "'T' and 'num_samples' should be integers"),
        ({"ema_weights": {"n_averaged": torch.tensor(1), "ln.weight": torch.ones(256)}}, r"module\.\* keys"),
    ],
)
def test_malformed_snapshots_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot, overrides: dict[str, object], message: str
) -> None:
    path = _write_snapshot(tmp_path / "bad.pt", monkeypatch, snapshot, **overrides)
    with pytest.raises(ValueError, match=message):
        read_grw_snapshot(path)


def test_files_other_than_snapshots_are_refused(tmp_path: Path) -> None:
    torch.save({"model_state": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="not a GRW snapshot: expected a dict with model_state, ema_weights"):
        read_grw_snapshot(tmp_path / "partial.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="text.pt is not a GRW snapshot"):
        read_grw_snapshot(tmp_path / "text.pt")


@needs_fixtures
@pytest.mark.parametrize("change", [{"embed_dim": 10**9}, {"num_classes": 10**8}, {"num_heads": 3}])
def test_a_head_this_reader_would_not_build_is_refused_before_any_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: GRWSnapshot, change: dict[str, int]
) -> None:
    import dataclasses

    crafted = dataclasses.replace(snapshot, head=dataclasses.replace(snapshot.head, **change))
    path = _write_snapshot(tmp_path / "crafted.pt", monkeypatch, crafted)
    with pytest.raises(ValueError, match="is not a head this reader builds"):
        read_grw_snapshot(path)
