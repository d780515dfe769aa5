"""Recipes: the command line made from their dataclasses, the Kinetics model factory, a whole airplanes run."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from grw.__main__ import build_parser, main
from grw.io import UnreadableCheckpoint
from grw.loss import grw_loss
from grw.options import add_options, from_args, to_args
from grw.recipes import Smoothing, get_recipe, torchrun_command
from grw.data.kinetics import eval_resize
from grw.recipes.kinetics import PRESETS, KineticsData, KineticsModel, build_model, preset_specs
from grw.train import TrainConfig

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "movinet"


def test_kinetics_command_line_round_trips_and_keeps_its_option_names():
    specs = (
        KineticsData(data_root="/data/k600", frames=120, fps=12.0, crop=256),
        KineticsModel(model="a2", stream=False, init_checkpoint="a2.pth"),
        Smoothing(lam=0.1, T=6),
        TrainConfig(epochs=14, backbone_lr=1e-4, amp="bf16", ema_decay=0.999, sync_bn=True, resume=True, out_dir="runs/x"),
    )
    args = build_parser().parse_args(["train", "kinetics", *(a for spec in specs for a in to_args(spec))])
    assert tuple(from_args(type(spec), args) for spec in specs) == specs
    for name in ("--data-root", "--frames", "--fps", "--crop", "--epochs", "--batch-size", "--lam", "--out-dir",
                 "--resume", "--init-checkpoint"):
        assert name in to_args(specs[0]) + to_args(specs[1]) + to_args(specs[2]) + to_args(specs[3]) + ["--batch-size"]
    command = torchrun_command("kinetics", *specs, nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29400")
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2"]
    assert "--rdzv-endpoint=node0:29400" in command and command[command.index("grw") + 1 : command.index("grw") + 3] == ["train", "kinetics"]


def kinetics_specs(*argv: str) -> tuple:
    args = build_parser().parse_args(["train", "kinetics", *argv])
    return tuple(from_args(cls, args) for cls in (KineticsData, KineticsModel, Smoothing))


def test_a_preset_sets_the_specs_and_an_explicit_option_wins():
    data, model, smoothing = kinetics_specs("--preset", "a3b", "--data-root", "/data/k600")
    assert (data.frames, data.fps, data.crop, data.data_root) == (120, 12.0, 256, "/data/k600")
    assert (model.model, model.stream, model.embed_dim, model.head_depth, model.head_heads, model.head_mlp_dim) == (
        "a3", False, 256, 1, 4, 512)
    assert smoothing == Smoothing(T=6)
    assert (data, model, smoothing) == preset_specs("A3B", data_root="/data/k600")

    # wherever it stands, an option given explicitly wins; the preset still sets the others
    for argv in (["--preset", "a3b", "--frames", "16", "--stream"], ["--frames", "16", "--stream", "--preset=a3b"]):
        data, model, smoothing = kinetics_specs(*argv, "--data-root", "/data/k600")
        assert (data.frames, data.fps, model.model, model.stream, smoothing.T) == (16, 12.0, "a3", True, 6)
    assert kinetics_specs("--preset", "a3b", "--frames", "16", "--data-root", "d") == preset_specs("a3b", data_root="d", frames=16)
    assert kinetics_specs("--data-root", "d") == (KineticsData(data_root="d"), KineticsModel(), Smoothing())  # no preset: the defaults

    data, model, smoothing = preset_specs("a2s", data_root="d", lam=0.0, init_checkpoint="a2.pth")
    assert (data.frames, data.crop, model.model, model.init_checkpoint, smoothing.lam, smoothing.T) == (50, 224, "a2", "a2.pth", 0.0, 5)
    with pytest.raises(TypeError, match="no field epochs, frame in KineticsData, KineticsModel or Smoothing"):
        preset_specs("a0s", data_root="d", frame=16, epochs=3)
    with pytest.raises(ValueError, match="unknown preset 'a4s': expected one of a0s, a1s, a2s, a3b"):
        preset_specs("a4s", data_root="d")


def test_an_unknown_preset_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["train", "kinetics", "--preset", "a4s", "--data-root", "d"])
    assert refused.value.code == 1
    assert capsys.readouterr().err == "error: unknown preset 'a4s': expected one of a0s, a1s, a2s, a3b\n"


def test_help_shows_the_values_of_the_preset(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    for argv, frames in ([], 50), (["--preset", "a3b"], 120):
        with pytest.raises(SystemExit) as stopped:
            main(["train", "kinetics", *argv, "--help"])
        assert stopped.value.code == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.lstrip().startswith("--preset NAME") and "a0s, a1s, a2s, a3b" in line for line in lines)
        assert next(line for line in lines if line.lstrip().startswith("--frames INT")).endswith(f"(default: {frames})")


def test_the_presets_resize_is_the_one_training_validates_on():
    assert [eval_resize(preset.crop) for preset in PRESETS.values()] == [preset.resize for preset in PRESETS.values()]


def test_the_head_mlp_width_is_a_setting():
    widths = {mlp_dim: build_model(KineticsModel(embed_dim=32, head_mlp_dim=mlp_dim), num_classes=3).head.blocks[0].mlp[1].out_features
              for mlp_dim in (None, 48)}
    assert widths == {None: 64, 48: 48}
    with pytest.raises(ValueError, match="head_mlp_dim must be an integer in \\[1, 65536\\], got 0"):
        KineticsModel(head_mlp_dim=0)


def test_an_option_set_to_none_round_trips():
    cfg = TrainConfig(backbone_lr=None, ema_decay=None)
    parser = argparse.ArgumentParser()
    add_options(parser, TrainConfig)
    assert from_args(TrainConfig, parser.parse_args(to_args(cfg))) == cfg
    assert from_args(TrainConfig, parser.parse_args(["--backbone-lr", "none", "--ema-decay", "0.9"])).ema_decay == 0.9


@pytest.mark.parametrize("recipe", ["airplanes", "kinetics"])
def test_every_option_has_help_text_and_shows_its_default(recipe, capsys):
    with pytest.raises(SystemExit):
        main(["train", recipe, "--help"])
    text = capsys.readouterr().out
    parser = build_parser()._subparsers._group_actions[0].choices["train"]._subparsers._group_actions[0].choices[recipe]
    for action in parser._actions[1:]:
        assert action.help and len(action.help) > 15, action.dest
        assert action.required or "(default: " in action.help, action.dest
    assert "--lam FLOAT" in text and "weight of the GRW loss" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lam", "nan"], "lam must be a finite number >= 0, got nan"),
        (["--lam", "inf"], "lam must be a finite number >= 0, got inf"),
        (["--alpha", "nan"], "alpha must be a finite number >= 0"),
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--lr", "0"], "lr must be a finite number > 0, got 0.0"),
        (["--T", "2"], "T must be an integer in [3, 64], got 2"),
        (["--model", "a9"], "unknown MoViNet 'a9'"),
        (["--frames", "4"], "--frames 4 is fewer than one GRW window of --T 5 frames"),
        (["--device", "foo"], "unknown device 'foo': expected cpu, cuda or cuda:N"),
        (["--device", "cuda:99"], "torch sees"),
        (["--resume", "--overwrite"], "--overwrite starts the run in --out-dir again and --resume continues it"),
        (["--frames", "4", "--lam", "0"], "no train split at"),  # the baseline needs no window: the data is read
        (["--fps", "0"], "fps must be a finite number in (0, 240], got 0.0"),
        (["--fps", "inf"], "fps must be a finite number in (0, 240], got inf"),
        (["--label-smoothing", "1"], "label_smoothing must be a finite number in [0, 1), got 1.0"),
        (["--head-heads", "0"], "head_heads must be an integer in [1, 64], got 0"),
        (["--head-heads", "3"], "head_heads must divide embed_dim = 256, got 3"),
        (["--head-depth", "-1"], "head_depth must be an integer in [1, 24], got -1"),
        (["--max-perms", "1000000000"], "max_perms must be an integer in [2, 100000], got 1000000000"),
        (["--min-lr-ratio", "2"], "min_lr_ratio must be a finite number in [0, 1], got 2.0"),
        (["--epochs", "2", "--warmup-epochs", "3"], "warmup_epochs must be at most the run's epochs = 2, got 3.0"),
        (["--crop", "100000"], "crop must be an integer in [32, 1024], got 100000"),
    ],
)
def test_bad_settings_are_refused_before_any_data_is_read(argv, message, tmp_path):
    with pytest.raises(SystemExit) as refused:
        main(["train", "kinetics", "--data-root", str(tmp_path / "data"), *argv])
    assert str(refused.value.code).startswith("error: ") and message in str(refused.value.code)


@pytest.mark.parametrize(("argv", "message"), [
    (["--stages", "0"], "stages must be an integer in [1, 6], got 0"),
    (["--stages", "40"], "stages must be an integer in [1, 6], got 40"),  # 2^40 channels: refused, never allocated
    (["--width", "0"], "width must be an integer in [1, 512], got 0"),
    (["--n-train", "1000000000"], "n_train must be an integer in [3, 100000], got 1000000000"),
    (["--val-fraction", "1"], "val_fraction must be a finite number in (0, 1), got 1.0"),
])
def test_airplanes_options_out_of_range_are_one_line_before_anything_is_rendered(argv, message, tmp_path):
    with pytest.raises(SystemExit) as refused:
        main(["train", "airplanes", "--data-root", str(tmp_path / "data"), *argv])
    assert str(refused.value.code) == f"error: {message}" and not (tmp_path / "data").exists()


def test_help_states_each_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "kinetics", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "side of the square crop (paper: 172 for A0/A1, 224 for A2, 256 for A3) [in [32, 1024]] (default: 172)" in text


def test_airplanes_recipe_trains_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "airplanes", "--data-root", str(tmp_path / "data"), "--n-train", "40", "--n-test", "9", "--frames", "6",
            "--size", "16", "--val-fraction", "0.25", "--embed-dim", "8", "--width", "4", "--head-heads", "2", "--T", "3",
            "--epochs", "2", "--batch-size", "10", "--no-progress", "--out-dir", str(out)]
    main(argv)
    results = json.loads((out / "results.json").read_text())
    assert results["smoothing"] == {"lam": 0.1, "alpha": 0.5, "T": 3, "max_perms": 1000}
    assert results["data"]["n_train"] == 40 and results["test"]["n"] == 9 and results["history"][0]["val_n"] == 10
    assert [h["epoch"] for h in results["history"]] == [1, 2] and results["history"][0]["train_grw"] > 0
    assert results["top1"] == results["history"][-1]["val_top1"] and results["classes"] == ["yaw", "pitch", "roll"]
    assert (out / "checkpoint.pt").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 2

    # the finished run is neither overwritten by accident nor continued with other data
    with pytest.raises(SystemExit, match="holds the checkpoint of a run .*: pass --resume to continue it, or --overwrite"):
        main(argv)
    assert json.loads((out / "results.json").read_text()) == results
    with pytest.raises(SystemExit, match=r"other settings: config.epochs \(2 there, 3 now\), data.frames \(6 there, 5 now\)"):
        main([*argv, "--resume", "--epochs", "3", "--frames", "5"])
    main([*argv, "--overwrite", "--frames", "5", "--epochs", "1"])
    again = json.loads((out / "results.json").read_text())
    assert again["data"]["frames"] == 5 and [h["epoch"] for h in again["history"]] == [1]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["settings"]["data"]["frames"] == 5


def test_the_baseline_has_no_regularizer():
    assert Smoothing(lam=0.0).regularizer() is None
    loss = Smoothing(lam=0.1, T=6, alpha=0.25).regularizer()
    assert (loss.T, loss.alpha) == (6, 0.25)
    assert get_recipe("kinetics").data is KineticsData
    with pytest.raises(ValueError, match="unknown recipe 'k400'"):
        get_recipe("k400")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"MoViNet fixtures not found at {FIXTURES}")
def test_kinetics_model_loads_published_weights_and_every_parameter_trains(tmp_path):
    from grw.models.movinet import create_movinet, load_movinet_pytorch_state_dict

    published = FIXTURES / "a0_stream_state_dict.pt"
    model = build_model(KineticsModel(init_checkpoint=str(published), embed_dim=32), num_classes=5).eval()
    reference = create_movinet("a0", stream=True).eval()
    load_movinet_pytorch_state_dict(reference, torch.load(published, weights_only=True))
    video = torch.rand(2, 3, 5, 32, 32)
    torch.testing.assert_close(model.backbone.features(video), reference.features(video))

    # DDP needs a gradient for every parameter: the published classifier must be gone, the rest reached
    logits, Z = model.train()(video)
    (logits.sum() + grw_loss(Z, 5)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not any("backbone.classifier" in name for name, _ in model.named_parameters())
    groups = model.parameter_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}

    # A checkpoint of the engine restores the whole model; another class count is a clear error
    torch.save({"model": model.state_dict(), "config": {}}, tmp_path / "checkpoint.pt")
    again = build_model(KineticsModel(init_checkpoint=str(tmp_path / "checkpoint.pt"), embed_dim=32), 5)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="classifies 5 classes but the data has 7"):
        build_model(KineticsModel(init_checkpoint=str(tmp_path / "checkpoint.pt"), embed_dim=32), 7)


def test_an_init_checkpoint_that_runs_code_or_is_not_weights_is_refused(tmp_path, code_running):
    hook, marker = code_running
    torch.save({"model": {}, "config": {}, "hook": hook}, tmp_path / "download.pt")
    with pytest.raises(UnreadableCheckpoint, match="download.pt holds objects other than tensors .* could run code"):
        build_model(KineticsModel(init_checkpoint=str(tmp_path / "download.pt")), 5)
    assert not marker.exists()
    torch.save({"conv.weight": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt has no MoViNet classifier weights \(classifier.3.\*.weight\): expected a "
                                         "MoViNet-pytorch state dict or a checkpoint.pt of this engine"):
        build_model(KineticsModel(init_checkpoint=str(tmp_path / "other.pt")), 5)
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="tensor.pt holds a Tensor: expected a MoViNet-pytorch state dict"):
        build_model(KineticsModel(init_checkpoint=str(tmp_path / "tensor.pt")), 5)


@pytest.mark.parametrize(("change", "message"), [
    ({"embed_dim": 10**9}, "embed_dim must be an integer in [1, 8192], got 1000000000"),  # refused, never allocated
    ({"head_heads": "4"}, "head_heads must be an integer, got '4' (str)"),
    ({"stream": 1}, "stream must be bool, got 1 (int)"),
])
def test_a_checkpoint_with_crafted_model_settings_is_refused_before_any_model_is_built(change, message, tmp_path, monkeypatch):
    import dataclasses

    import torch

    import grw.recipes.kinetics as kinetics

    monkeypatch.setattr(kinetics, "build_model", lambda *a, **k: pytest.fail("a model was built from crafted settings"))
    saved = dataclasses.asdict(kinetics.KineticsModel()) | change
    torch.save({"settings": {"model": saved}, "model": {}, "ema": None}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError) as refused:
        kinetics.load_evaluation_model(tmp_path / "checkpoint.pt", 3, ema=False, preset=kinetics.get_preset("a0s"))
    assert message in str(refused.value)
