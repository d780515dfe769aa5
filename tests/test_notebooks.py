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
