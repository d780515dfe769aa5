"""Papermill runs of the notebooks with small parameters, asserting on the results.json each writes.

nbval (configured in pyproject.toml) separately re-runs every notebook at its defaults and compares
the stored outputs; the first test here makes sure there are outputs worth comparing.
"""

import json
import math
from pathlib import Path

import pytest

from grw.tour import run_notebook, summary_rows

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MIN_COMPARED_CELLS = 3
NBVAL_UNCOMPARED_TAGS = {"nbval-ignore-output", "nbval-skip"}
NBVAL_UNCOMPARED_COMMENTS = {"NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP", "PYTEST_VALIDATE_IGNORE_OUTPUT"}  # `# NBVAL_SKIP` lines


def _compared(cell: dict) -> bool:
    """Whether nbval compares this code cell's stored outputs with a fresh run's."""
    tags = set(cell.get("metadata", {}).get("tags", []))
    lines = (line.strip() for line in "".join(cell["source"]).splitlines())
    comments = {line.lstrip("#").strip() for line in lines if line.startswith("#")}
    return not (tags & NBVAL_UNCOMPARED_TAGS or comments & NBVAL_UNCOMPARED_COMMENTS)


def _shows_something(output: dict) -> bool:
    text = output.get("text") or output.get("data", {}).get("text/plain") or ""
    return bool("".join(text).strip()) or any(key != "text/plain" for key in output.get("data", {}))


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda path: path.stem)
def test_notebook_is_committed_with_outputs_that_nbval_compares(notebook):
    cells = [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    assert outputs, f"{notebook.name} is committed without outputs: nbval would pass it without comparing anything"
    errors = [output.get("ename") for output in outputs if output["output_type"] == "error"]
    assert not errors, f"{notebook.name} is committed with errors in its outputs: {errors}"
    compared = sum(_compared(cell) and any(map(_shows_something, cell.get("outputs", []))) for cell in cells)
    assert compared >= MIN_COMPARED_CELLS, (
        f"{notebook.name} has {compared} code cells whose outputs nbval compares, expected at least "
        f"{MIN_COMPARED_CELLS}: print rounded headline numbers or checks in cells without the nbval-ignore-output tag"
    )


def test_01_loss_derivation(tmp_path):
    r = run_notebook(NOTEBOOKS / "01_loss_derivation.ipynb", tmp_path, {"T": 5, "clips": 2, "steps": 200})
    assert r["parameters"]["T"] == 5
    assert r["worked_example_T4"] == pytest.approx(1.5138385)
    assert r["log_likelihood"]["grw_path"] > 100 * r["log_likelihood"]["jittery_path"]
    table = r["collapse_table"]
    assert table["collapsed (one point)"]["smoothness"] == 0.0
    assert table["collapsed (one point)"]["ordering_ce"] == pytest.approx(3.1780538, rel=1e-5)  # log(4!)
    assert r["collapse_demo"]["ordering_contrast"] > 3 * r["collapse_demo"]["smoothness_only"]
    assert r["frame_0_fixed"]["ce_all_orders"] >= math.log(2) > r["frame_0_fixed"]["ce_frame_0_first"]
    assert r["true_order_rank"]["smooth window (from the prior)"]["rank"] == 1
    free = r["free_embeddings"]
    assert free["bending"]["trained"] < free["bending"]["start"] / 2
    assert free["loss"]["trained"] < free["loss"]["start"]
    for name in ("random_walk_vs_jitter", "scale_term", "ordering_logits", "free_embeddings"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_01_with_sampled_orderings_and_its_checks(tmp_path):
    r = run_notebook(NOTEBOOKS / "01_loss_derivation.ipynb", tmp_path, {"T": 12, "clips": 2, "steps": 50, "seed": 3})
    table = r["collapse_table"]
    assert table["collapsed (one point)"]["ordering_ce"] == pytest.approx(math.log(1000), rel=1e-5)  # 1,000 drawn, not 11!
    assert r["frame_0_fixed"]["ce_all_orders"] >= math.log(2) > r["frame_0_fixed"]["ce_frame_0_first"]
    assert r["summary"]["worked example T = 4"] == "1.5138"  # T = 4 whatever T is
    with pytest.raises(Exception, match="parameter T = 2: expected a window of 3 to 16 frames"):
        run_notebook(NOTEBOOKS / "01_loss_derivation.ipynb", tmp_path / "bad", {"T": 2})


def test_02_vectorized_implementation(tmp_path):
    params = {"base": [8, 5, 32], "T_values": [3, 5, 8], "K_values": [16, 64], "B_values": [4, 8], "min_run_time": 0.01,
              "backbone_input": [2, 3, 16, 32, 32], "devices": ["cpu"]}
    r = run_notebook(NOTEBOOKS / "02_vectorized_implementation.ipynb", tmp_path, params)
    assert r["devices"] == ["cpu"]
    assert r["max_relative_difference"] < 1e-5
    assert r["offset_relative_error"]["Gram, centred (grw_loss)"] < 1e-5
    assert r["offset_relative_error"]["Gram, not centred"] > 100 * r["offset_relative_error"]["Gram, centred (grw_loss)"]
    for check in r["gradient_checks"].values():  # the derived gradient of the Gram form
        assert check["gradcheck"] and check["max_relative_difference_to_autograd"] < 1e-12
        assert check["window_sums"] < 1e-12 and check["trailing_frame"] == 0
    assert r["gram_macs_per_window"]["backward, derived"] == 15 * 24 + 5**2 * 32  # UP + T²K at T = 5 (U = 15), K = 32, P = 24
    sweeps = r["sweeps"]["cpu"]
    assert set(sweeps["T"]) == {"3", "5", "8"} and set(sweeps["K"]) == {"16", "64"} and set(sweeps["B"]) == {"4", "8"}
    for row in sweeps["T"].values():
        assert set(row) == {"loop", "materialized", "Gram"}
        assert all(v["ms"] > 0 and v["forward_ms"] > 0 and v["predicted_MB"] > 0 for v in row.values())
    W, T, K, P = 8, 5, 32, 24
    assert sweeps["T"]["5"]["materialized"]["predicted_MB"] == pytest.approx(4 * (3 * W * P * T * K + 2 * W * T * K) / 2**20)
    P8 = 1000  # T = 8: the orderings drawn per call, not 7! = 5040
    assert sweeps["T"]["8"]["materialized"]["predicted_MB"] == pytest.approx(4 * (3 * W * P8 * 8 * K + 2 * W * 8 * K) / 2**20)
    allocated = r["allocated_MB"]["5"]
    assert allocated["loop"] > allocated["materialized"] > 10 * allocated["Gram"]
    assert r["backbone"]["cpu"]["step_ms"]["with GRW"] > 0 and r["backbone"]["cpu"]["loss_alone_ms"] > 0
    assert (tmp_path / "loss_cost_sweeps.png").is_file()
    key = "derived gradient passes gradcheck and equals autograd's"
    assert r["summary"][key] is True and ("02", key, "True") in summary_rows({"02": r})
    sampled = r["sampled_orderings"]  # T = 8: the estimator over drawn orderings against all 5,040
    assert sampled["orderings"] == 5040 and set(sampled["scales"]) == {"0.05", "0.1", "0.2"}
    for scale in sampled["scales"].values():
        at_1000 = scale["max_perms"]["1000"]
        assert at_1000["log_m_over_P"] == pytest.approx(math.log(1000 / 5040))
        assert abs(at_1000["bias"] - at_1000["log_m_over_P"]) < 0.2 and at_1000["gradient_cosine_min"] > 0.9
    speed_up = r["summary"]["speed-up of Gram over materialized at B, T, K = 8, 5, 32 (cpu)"]
    assert speed_up.endswith("x") and float(speed_up[:-1]) > 0  # "0.62x" for a slower Gram form, never a rounded "1x"


@pytest.mark.parametrize(("params", "message"), [
    ({"base": [32, 6]}, "parameter base = \\[32, 6\\]: expected \\[B, T, K\\]"),
    ({"T_values": [2, 5]}, "parameter T_values = \\[2, 5\\]: expected window lengths from 3 to 16"),
    ({"K_values": [65536]}, "the materialized form at B, T, K = \\(32, 6, 65536\\) would need"),
    ({"backbone_input": [2, 3, 8, 32, 32]}, "parameter backbone_input = \\[2, 3, 8, 32, 32\\]: expected"),
])
def test_02_refuses_bad_parameters_before_any_work(tmp_path, params, message):
    with pytest.raises(Exception, match=message):
        run_notebook(NOTEBOOKS / "02_vectorized_implementation.ipynb", tmp_path / "out", params)
    assert not (tmp_path / "out" / "results.json").exists()


def test_03_airplanes_warmup(tmp_path):
    params = {"sizes": [9, 12], "seeds": [3, 4], "frames": 10, "size": 16, "width": 4, "stages": 2, "K": 8, "heads": 2,
              "steps": {"per_frame": 4, "causal": 3}, "batch_size": 8, "n_val": 12, "n_test": 12, "lam_sweep": [1.0],
              "data_root": str(tmp_path / "data")}  # seeds and sizes alone: the ablation follows them
    r = run_notebook(NOTEBOOKS / "03_airplanes_warmup.ipynb", tmp_path, params)
    assert r["parameters"]["size"] == 16 and r["parameters"]["seeds"] == [3, 4]
    assert r["parameters"]["lr"] == 3e-3  # left unset: the laptop preset's
    assert r["parameters"]["ablation_seeds"] == [3, 4] and r["parameters"]["ablation_size"] == 12  # nearest to 500
    assert (tmp_path / "data").is_dir()  # the dataset went where it was told
    study, headline = r["study"], r["headline"]
    assert study["sizes"] == [9, 12] and study["seeds"] == [3, 4] and list(study["encoders"]) == ["per_frame", "causal"]
    for result in study["encoders"].values():
        for arm in ("baseline", "grw"):
            assert set(result[arm]) == {"9", "12"}
            assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in result[arm].values())
        for size in ("9", "12"):
            gains = [100 * (g - b) for g, b in zip(result["grw"][size], result["baseline"][size])]
            assert result["paired_gain_pp"][size]["mean"] == pytest.approx(sum(gains) / 2)
    pf, causal = study["encoders"]["per_frame"], study["encoders"]["causal"]
    interaction = pf["paired_gain_pp"]["12"]["mean"] - causal["paired_gain_pp"]["12"]["mean"]
    assert study["interaction_pp"]["12"]["mean"] == pytest.approx(interaction)
    best = max((g["mean"], e, int(n)) for e, res in study["encoders"].items() for n, g in res["paired_gain_pp"].items())
    assert headline["seeds"] == 2 and headline["gain_pp"] == best[0]
    assert study["encoders"][headline["encoder"]]["paired_gain_pp"][str(headline["size"])]["mean"] == best[0]
    sweep = r["lambda_sweep"]
    assert sweep["encoder"] == "per_frame" and set(sweep) == {"encoder", "0.0", "0.1", "1.0"}
    assert sweep["0.0"]["accuracy"] == pf["baseline"]["12"] and sweep["0.1"]["accuracy"] == pf["grw"]["12"]  # reused
    mechanism = r["mechanism"]["per_frame"]["grw"]
    assert len(mechanism["pose_tracking"]) == 2 and all(-1 <= v <= 1 for v in mechanism["pose_tracking"])
    assert all(len(curve) == 10 for curve in mechanism["prefix_accuracy"])
    assert mechanism["prefix_accuracy"][0][-1] == pf["grw"]["12"][0]  # all frames seen: the scored accuracy
    assert r["figure_seed"] in (3, 4) and 0 <= r["single_frame_accuracy"] <= 1
    for name in ("clips", "study", "mechanism", "trajectories", "clip_grid_baseline", "clip_grid_grw", "terms",
                 "lambda_sweep"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    rows = {k: v for _, k, v in summary_rows({"03": r})}
    assert rows["single-frame control top-1 (%)"].endswith("(chance 33)")
    assert rows["headline"].startswith(f"{headline['gain_pp']:+.1f} points, {headline['encoder']} encoder")


def test_03_refuses_bad_parameters_before_any_work(tmp_path):
    with pytest.raises(Exception, match="parameter ablation_size = 250: expected one of the study's sizes"):
        run_notebook(NOTEBOOKS / "03_airplanes_warmup.ipynb", tmp_path, {"sizes": [9, 12], "ablation_size": 250,
                                                                      "data_root": str(tmp_path / "data")})
    assert not (tmp_path / "data").exists()  # refused before rendering


def test_04_kinetics600_movinet_under_torchrun(tmp_path):
    synthetic = {"classes": 3, "train_per_class": 4, "val_per_class": 2, "test_per_class": 2, "seed": 1}
    params = {"synthetic_root": str(tmp_path / "data"), "synthetic": synthetic, "nproc_per_node": 2, "epochs": 2,
              "batch_size": 4, "frames": 5, "crop": 32, "precise_bn": 1}
    r = run_notebook(NOTEBOOKS / "04_kinetics600_movinet.ipynb", tmp_path, params)
    assert (r["preset"], r["data"], r["epochs"], r["world_size"], r["classes"]) == ("a0s", "synthetic", 2, 2, 3)
    assert (tmp_path / "data" / "v2-c3-train4-val2-test2-seed1-release" / "annotations" / "test.csv").is_file()
    for name in ("baseline", "grw"):
        history = r["history"][name]
        assert [h["epoch"] for h in history] == [1, 2] and all(h["val_n"] == 6 for h in history)
        assert (tmp_path / name / "checkpoint.pt").is_file()
        assert len((tmp_path / name / "metrics.jsonl").read_text().splitlines()) == 2
        for weights in ("raw", "ema"):
            scores = r["evaluate"][f"{name} {weights}"]
            # 6 test videos of 10 s: 50 frames at 5 fps, cut into 10 clips of 5 frames each
            assert (scores["split"], scores["weights"], scores["videos"], scores["clips"]) == ("test", weights, 6, 60)
            assert all(0 <= scores[key] <= 1 for key in ("top1", "top5", "video_top1"))
            assert (tmp_path / f"evaluate_{name}_{weights}.json").is_file()
    assert r["history"]["baseline"][0]["train_grw"] == 0 and r["history"]["grw"][0]["train_grw"] > 0
    assert r["gmacs"]["paper input"] == pytest.approx(2.45, rel=0.03)  # A0-stream at 50×172², GRW head included
    assert set(r["seconds"]) == {"data", "baseline", "grw", "total"}
    for name in ("clips", "learning_curves"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000


def test_04_another_preset_in_one_process_prints_what_it_stores(tmp_path):
    synthetic = {"classes": 2, "train_per_class": 4, "val_per_class": 2, "test_per_class": 2, "seed": 2}
    params = {"preset": "a1s", "synthetic_root": str(tmp_path / "data"), "synthetic": synthetic, "epochs": 1,
              "batch_size": 4, "frames": 5, "crop": 32, "precise_bn": 0, "seed": 1}
    r = run_notebook(NOTEBOOKS / "04_kinetics600_movinet.ipynb", tmp_path, params)
    assert (r["preset"], r["world_size"], r["classes"], r["epochs"]) == ("a1s", 1, 2, 1)
    assert all(e["clips"] > 0 and 0 <= e["top1"] <= 1 for e in r["evaluate"].values())
    macs = r["macs"]  # the paper's input: the head's share of a clip's multiply-adds
    assert 0 < macs["head_gmacs"] < macs["backbone_gmacs"] and macs["head_params"] > 0 and macs["backbone_params"] > 0
    assert set(r["smoothness"]) == {"baseline", "grw"}
    assert all(v["grw_loss"] > 0 and v["msa_within"] > 0 for v in r["smoothness"].values())
    printed = "".join("".join(output.get("text", "")) for cell in json.loads((tmp_path / "04_kinetics600_movinet.ipynb").read_text())["cells"]
                      if cell["cell_type"] == "code" for output in cell.get("outputs", []))
    assert "preset a1s: MoViNet-A1 stream" in printed
    for key, value in r["summary"].items():
        assert f"{key:40s} {value}" in printed


@pytest.mark.parametrize(("params", "message"), [
    ({"batch_size": 80}, "parameter batch_size = 80: expected at most the stand-in's 64 training videos"),
    ({"frames": 120}, "parameter frames = 120: expected a clip of at most the stand-in's 10 s"),
    ({"frames": 4}, "parameter frames = 4: expected at least the preset's GRW window T = 5"),
    ({"synthetic": {"clases": 3}}, "parameter synthetic = \\{'clases': 3\\}: expected counts >= 1 under the keys"),
    ({"preset": "a9"}, "unknown preset 'a9'"),
])
def test_04_refuses_bad_parameters_before_any_work(tmp_path, params, message):
    with pytest.raises(Exception, match=message):
        run_notebook(NOTEBOOKS / "04_kinetics600_movinet.ipynb", tmp_path / "out",
                     {**params, "synthetic_root": str(tmp_path / "data")})
    assert not (tmp_path / "data").exists() and not (tmp_path / "out" / "baseline").exists()


def test_05_your_own_model_with_sampled_orderings(tmp_path):
    params = {"seeds": [7, 8], "clips": 16, "batch_size": 8, "steps": 4, "T": 8, "lam_sweep": [1.0], "sweep_seeds": [7, 8]}
    r = run_notebook(NOTEBOOKS / "05_your_own_model.ipynb", tmp_path, params)
    assert r["parameters"]["T"] == 8 and r["parameters"]["seeds"] == [7, 8]
    layers = r["layers"]
    assert (layers["size"], layers["seeds"], layers["tap"]) == (16, [7, 8], "backbone.2")
    for arm in ("baseline", "final", "intermediate", "both"):
        assert len(layers[arm]) == 2 and all(0 <= a <= 1 and round(300 * a) == pytest.approx(300 * a) for a in layers[arm])
    for arm in ("final", "intermediate", "both"):
        gains = [100 * (t - b) for t, b in zip(layers[arm], layers["baseline"])]
        assert layers["paired_gain_pp"][arm]["mean"] == pytest.approx(sum(gains) / 2)
    checklist = r["checklist"]
    at_init = checklist["at_init"]
    assert at_init["ce"] == pytest.approx(math.log(3), abs=0.1)  # a fresh 3-class classifier
    assert checklist["lam_grw_over_ce_at_init"]["final"] == pytest.approx(0.1 * at_init["grw_final"] / at_init["ce"])
    windows = checklist["windows"]
    assert windows["8"] == {**windows["8"], "windows": 1, "frames_left_out": 2, "orderings": 1000, "sampled": True}
    assert windows["5"]["orderings"] == 24 and not windows["5"]["sampled"]
    sweep = r["lambda_sweep"]
    assert set(sweep) == {"layer", "seeds", "0.0", "0.1", "1.0"}
    assert sweep["0.0"]["accuracy"] == layers["baseline"] and sweep["0.1"]["accuracy"] == layers["final"]  # reused
    assert sweep["1.0"]["lam_grw_over_ce_at_init"] == pytest.approx(10 * sweep["0.1"]["lam_grw_over_ce_at_init"])
    assert (tmp_path / "fit_final" / "checkpoint.pt").is_file() and r["fit"]["plain_loop_top1"] == layers["final"][0]
    for name in ("layers", "lambda_sweep"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    printed = "".join("".join(output.get("text", "")) for cell in json.loads((tmp_path / "05_your_own_model.ipynb").read_text())["cells"]
                      if cell["cell_type"] == "code" for output in cell.get("outputs", []))
    for arm in ("final", "intermediate", "both"):  # what the notebook printed is what it stored
        assert f"gain {r['summary'][f'gain (points), {arm}']} points" in printed


@pytest.mark.parametrize(("params", "message"), [
    ({"tap": "backbone.9"}, "parameter tap = 'backbone.9': expected one of the backbone's blocks"),
    ({"T": 11}, "parameter T = 11: expected a window of 3 to 10 frames"),
    ({"sweep_seeds": [0, 9]}, "parameter sweep_seeds = \\[0, 9\\]: expected two or more distinct seeds out of seeds"),
])
def test_05_refuses_bad_parameters_before_any_work(tmp_path, params, message):
    with pytest.raises(Exception, match=message):
        run_notebook(NOTEBOOKS / "05_your_own_model.ipynb", tmp_path, {**params, "data_root": str(tmp_path / "data")})
    assert not (tmp_path / "data").exists()
