"""Papermill runs of the notebooks with small parameters, asserting on the results.json each writes.

nbval (configured in pyproject.toml) separately re-runs every notebook at its defaults and compares
the stored outputs.
"""

from pathlib import Path

import pytest

from grw.tour import run_notebook, summary_rows

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_01_loss_derivation(tmp_path):
    r = run_notebook(NOTEBOOKS / "01_loss_derivation.ipynb", tmp_path, {"T": 5, "clips": 2, "steps": 200})
    assert r["parameters"]["T"] == 5
    assert r["worked_example_T4"] == pytest.approx(1.5138385)
    assert r["log_likelihood"]["grw_path"] > 100 * r["log_likelihood"]["jittery_path"]
    table = r["collapse_table"]
    assert table["collapsed (one point)"]["smoothness"] == 0.0
    assert table["collapsed (one point)"]["ordering_ce"] == pytest.approx(3.1780538, rel=1e-5)  # log(4!)
    assert r["collapse_demo"]["ordering_contrast"] > 3 * r["collapse_demo"]["smoothness_only"]
    free = r["free_embeddings"]
    assert free["bending"]["trained"] < free["bending"]["start"] / 2
    assert free["loss"]["trained"] < free["loss"]["start"]
    for name in ("random_walk_vs_jitter", "scale_term", "ordering_logits", "free_embeddings"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_02_vectorized_implementation(tmp_path):
    params = {"base": [8, 5, 32], "T_values": [3, 5], "K_values": [16, 64], "B_values": [4, 8], "min_run_time": 0.01,
              "backbone_input": [2, 3, 16, 32, 32]}
    r = run_notebook(NOTEBOOKS / "02_vectorized_implementation.ipynb", tmp_path, params)
    assert r["max_relative_difference"] < 1e-5
    assert r["offset_relative_error"]["Gram, centred (grw_loss)"] < 1e-5
    assert r["offset_relative_error"]["Gram, not centred"] > 100 * r["offset_relative_error"]["Gram, centred (grw_loss)"]
    assert set(r["sweeps"]["T"]) == {"3", "5"} and set(r["sweeps"]["K"]) == {"16", "64"}
    for row in r["sweeps"]["T"].values():
        assert set(row) == {"loop", "materialized", "Gram"} and all(v["ms"] > 0 for v in row.values())
    assert r["backbone_step_ms"]["with GRW"] > 0
    assert (tmp_path / "loss_cost_sweeps.png").is_file()
    assert ("02", "forms agree (max relative difference)", r["summary"]["forms agree (max relative difference)"]) in summary_rows({"02": r})


def test_03_airplanes_warmup(tmp_path):
    params = {"n_train": 60, "n_test": 15, "frames": 8, "size": 24, "epochs": 2, "seeds": [0, 1], "T": 4, "K": 16,
              "batch_size": 16, "val_fraction": 0.2, "lam": 0.5, "lam_sweep": [2.0], "data_root": str(tmp_path / "data")}
    r = run_notebook(NOTEBOOKS / "03_airplanes_warmup.ipynb", tmp_path, params)
    assert r["parameters"]["size"] == 24 and r["parameters"]["seeds"] == [0, 1]
    assert (tmp_path / "data").is_dir()  # the dataset went where it was told
    for name in ("baseline", "grw"):
        assert len(r["test_accuracy"][name]) == 2 and all(0 <= a <= 100 for a in r["test_accuracy"][name])
        per_seed = r["per_seed"][name]
        assert all(0 < m < 20 for m in per_seed["mean_sq_acceleration"]) and all(0 < s <= 1 for s in per_seed["straightness"])
        assert r["mean_sq_acceleration"][name] == pytest.approx(sum(per_seed["mean_sq_acceleration"]) / 2)
        assert sum(map(sum, r["confusion"][name])) == 2 * 15  # every test clip of both seeds, once
        assert [h["epoch"] for h in r["history"][name][0]] == [1, 2]
    assert r["history"]["baseline"][0][0]["train_grw"] == 0 and r["history"]["grw"][0][0]["train_grw"] > 0
    assert set(r["lambda_sweep"]) == {"0.0", "0.5", "2.0"}
    assert r["lambda_sweep"]["0.0"]["accuracy"] == r["test_accuracy"]["baseline"][0]
    assert 0 <= r["single_frame_accuracy"] <= 100
    for name in ("clips", "learning_curves", "confusion", "trajectories", "lambda_sweep"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert dict(((k, v) for _, k, v in summary_rows({"03": r})))["single-frame control top-1 (%)"].endswith("(chance 33)")


def test_04_kinetics600_movinet_under_torchrun(tmp_path):
    synthetic = {"classes": 3, "train_per_class": 4, "val_per_class": 2, "seed": 1}
    params = {"synthetic_root": str(tmp_path / "data"), "synthetic": synthetic, "nproc_per_node": 2, "epochs": 2,
              "batch_size": 4, "frames": 5, "crop": 32}
    r = run_notebook(NOTEBOOKS / "04_kinetics600_movinet.ipynb", tmp_path, params)
    assert (r["model"], r["data"], r["epochs"], r["world_size"], r["classes"]) == ("a0-stream", "synthetic", 2, 2, 3)
    assert (tmp_path / "data" / "c3-train4-val2-seed1" / "synthetic.json").is_file()
    for name in ("baseline", "grw"):
        assert 0 <= r["top1"][name] <= 100 and r["top5"][name] == 100  # three classes: always in the top 5
        history = r["history"][name]
        assert [h["epoch"] for h in history] == [1, 2] and all(h["val_n"] == 6 for h in history)
        assert (tmp_path / name / "checkpoint.pt").is_file()
        assert len((tmp_path / name / "metrics.jsonl").read_text().splitlines()) == 2
    assert r["history"]["baseline"][0]["train_grw"] == 0 and r["history"]["grw"][0]["train_grw"] > 0
    assert r["gmacs"]["paper input"] == pytest.approx(2.45, rel=0.03)  # A0-stream at 50×172², GRW head included
    assert set(r["seconds"]) == {"data", "baseline", "grw", "total"}
    for name in ("clips", "learning_curves"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
