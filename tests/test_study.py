"""The study's parts on hand-computed values: presets, paired intervals, the study summary, smoothness where the loss
acts, effective rank, the velocity-direction probe, the GRW terms as regularizers, and one baseline run."""

import math

import pytest
import torch

from grw.data.airplanes import AirplanesConfig, AirplanesDataset, render_airplanes
from grw.loss import GRWLoss
from grw.metrics import (
    effective_rank,
    paired_difference,
    pose_tracking,
    prefix_accuracy,
    student_t_quantile,
    velocity_direction_probe,
    window_smoothness,
)
from grw.recipes.airplanes import AirplanesModel, build_model
from grw.study import (
    ENCODERS,
    PRESETS,
    GRWTerm,
    Job,
    RunSettings,
    encoder_settings,
    resolve_parameters,
    run_study,
    summarize_study,
    train_and_score,
    train_many,
)
from grw.train import fit, seed_everything


def test_an_explicit_parameter_wins_and_unset_ones_come_from_the_preset():
    resolved = resolve_parameters("laptop", {"seeds": [0, 1, 7], "steps": None, "size": 32})
    assert resolved["seeds"] == [0, 1, 7] and resolved["size"] == 32  # passed: kept
    assert resolved["steps"] == PRESETS["laptop"]["steps"] and resolved["sizes"] == PRESETS["laptop"]["sizes"]
    assert resolved["ablation_seeds"] == [0, 1, 7]  # the preset's [0, 1, 2] are not all study seeds: the first three
    assert resolve_parameters("paper", {"steps": None})["steps"] == PRESETS["paper"]["steps"] != PRESETS["laptop"]["steps"]
    assert resolve_parameters("laptop", {"steps": 7})["steps"] == {"per_frame": 7, "causal": 7}  # one number for all
    with pytest.raises(ValueError, match="unknown preset 'full'; expected one of laptop, paper"):
        resolve_parameters("full", {})
    with pytest.raises(ValueError, match="no parameter called epochs"):
        resolve_parameters("laptop", {"epochs": 3})


def test_the_ablation_follows_the_study_unless_told_otherwise():
    # seeds alone: the ablation's seeds are the study's first ones (the preset's [0, 1, 2] are not all study seeds)
    assert resolve_parameters("laptop", {"seeds": [5, 6, 7, 8]})["ablation_seeds"] == [5, 6, 7]
    # sizes alone: the size nearest the preset's 500 on a log scale; the encoder: the first one studied
    resolved = resolve_parameters("laptop", {"sizes": [30, 200, 2000], "encoders": ["causal"]})
    assert resolved["ablation_size"] == 200 and resolved["ablation_encoder"] == "causal"
    with pytest.raises(ValueError, match=r"parameter ablation_size = 300: expected one of the study's sizes \[100"):
        resolve_parameters("laptop", {"ablation_size": 300})
    with pytest.raises(ValueError, match=r"parameter ablation_seeds = \[0, 9\]: expected two or more distinct seeds"):
        resolve_parameters("laptop", {"ablation_seeds": [0, 9]})


@pytest.mark.parametrize("given,named", [
    ({"seeds": [3]}, "seeds"), ({"seeds": [1, 1]}, "seeds"), ({"T": 6}, "T"), ({"T": 2}, "T"), ({"frames": 8}, "T"),
    ({"encoders": ["per_frame", "spatial"]}, "encoders"), ({"encoders": []}, "encoders"), ({"steps": 0}, "steps"),
    ({"steps": {"causal": 10}}, "steps"), ({"sizes": [2, 100]}, "sizes"), ({"size": 4}, "size"), ({"K": 15}, "K"),
    ({"lr": 0.0}, "lr"), ({"ablation_encoder": "causal", "encoders": ["per_frame"]}, "ablation_encoder"),
    ({"lam_sweep": [0.0]}, "lam_sweep"), ({"batch_size": 0}, "batch_size"), ({"sizes": [10**7]}, "sizes"),
])
def test_bad_study_parameters_are_refused_naming_the_parameter(given, named):
    with pytest.raises(ValueError, match=f"^parameter {named} = "):
        resolve_parameters("laptop", given)


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_student_t_quantiles_match_the_tables(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_difference_interval():
    result = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    half = 3.182446 * math.sqrt(5 / 3) / 2  # t(0.975, 3) · sd / sqrt(n); sd of 1..4 is sqrt(5/3)
    assert result["mean"] == 2.5 and result["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 paired values"):
        paired_difference([1.0], [0.0])


def test_study_summary_pairs_the_seeds_and_picks_the_largest_gain():
    causal = {"baseline": {10: [0.5, 0.6, 0.7], 100: [0.8, 0.8, 0.9]},
              "grw": {10: [0.6, 0.6, 0.8], 100: [0.8, 0.9, 0.9]}}
    per_frame = {"baseline": {10: [0.3, 0.4, 0.5], 100: [0.5, 0.6, 0.7]},
                 "grw": {10: [0.3, 0.4, 0.5], 100: [0.9, 0.8, 0.9]}}
    study, headline = summarize_study({"per_frame": per_frame, "causal": causal}, [0, 1, 2])
    assert study["sizes"] == [10, 100] and study["seeds"] == [0, 1, 2]
    assert list(study["encoders"]) == ["per_frame", "causal"]
    assert study["encoders"]["causal"]["baseline"]["10"] == [0.5, 0.6, 0.7]
    assert study["encoders"]["per_frame"]["grw"]["100"] == [0.9, 0.8, 0.9]
    gain = study["encoders"]["causal"]["paired_gain_pp"]["10"]  # gains 10, 0, 10 points
    half = 4.302653 * math.sqrt(100 / 3) / math.sqrt(3)
    assert gain["mean"] == pytest.approx(20 / 3) and gain["ci95"] == pytest.approx([20 / 3 - half, 20 / 3 + half], abs=1e-4)
    best = study["encoders"]["per_frame"]["paired_gain_pp"]["100"]  # gains 40, 20, 20
    assert best["mean"] == pytest.approx(80 / 3)
    assert headline == {"encoder": "per_frame", "size": 100, "gain_pp": best["mean"], "ci95": best["ci95"], "seeds": 3}
    # per seed at 100 clips: per-frame gains 40, 20, 20 minus causal gains 0, 10, 0
    assert study["interaction_pp"]["100"]["mean"] == pytest.approx(70 / 3)
    assert study["interaction_pp"]["10"]["mean"] == pytest.approx(-20 / 3)  # per-frame gains 0, causal 10, 0, 10
    # per-frame + GRW against the causal baseline at 100 clips: 90 - 80, 80 - 80, 90 - 90
    assert study["per_frame_grw_vs_causal_baseline_pp"]["100"]["mean"] == pytest.approx(10 / 3)
    alone, _ = summarize_study({"causal": causal}, [0, 1, 2])  # one encoder: no contrasts between encoders
    assert "interaction_pp" not in alone and alone["encoders"]["causal"] == study["encoders"]["causal"]
    with pytest.raises(ValueError, match=r"causal/baseline at size 10: expected 3 accuracies in \[0, 1\]"):
        summarize_study({"causal": {"baseline": {10: [50.0, 60.0, 70.0]}, "grw": {10: [0.6, 0.6, 0.8]}}}, [0, 1, 2])
    with pytest.raises(ValueError, match=r"per_frame/grw: expected the sizes \[10, 100\]"):
        summarize_study({"causal": causal, "per_frame": {**per_frame, "grw": {10: [0.3, 0.4, 0.5]}}}, [0, 1, 2])


def test_smoothness_within_windows_and_across_their_boundaries():
    # two straight windows 0..4, the second starting again at 0: no acceleration inside, a jump at the boundary
    Z = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], dtype=torch.float64)[None, :, None]
    s = window_smoothness(Z, 5)
    # standardized: divided by the std of the ten values, sqrt(20/9); the boundary accelerations are -5 and 5
    assert s["msa_within"] == 0 and s["msa_across"] == pytest.approx(25 / (20 / 9))
    assert s["straightness_within"] == pytest.approx(1.0)
    assert s["straightness_across"] == pytest.approx(1 / 7)  # frames 3..7: 3, 4, 0, 1, 2 → chord 1, path 7
    with pytest.raises(ValueError, match="two windows at least"):
        window_smoothness(Z[:, :9], 5)


def test_effective_rank():
    # centred frames with singular values sqrt(18) and sqrt(2): p = (3/4, 1/4)
    Z = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])[None]
    assert effective_rank(Z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(torch.eye(4)[None] + 5) == pytest.approx(3.0)  # centred, 4 points span 3 equal directions
    assert effective_rank(torch.arange(6.0)[None, :, None] * torch.tensor([1.0, 2.0, -1.0])) == pytest.approx(1.0)


def test_velocity_direction_probe_reads_directions_not_positions():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % 3
    start = torch.randn(30, 1, 4, generator=generator) * 5  # positions carry no class
    steps = torch.arange(10.0)[None, :, None]
    directions = torch.eye(4)[labels][:, None]  # class c moves along axis c
    assert velocity_direction_probe(start + steps * directions, labels, 5) == 1.0
    same = start + steps * torch.eye(4)[0]  # every class moves the same way: nothing to read
    assert velocity_direction_probe(same, labels, 5) <= 0.4


def test_grw_terms_as_regularizers():
    Z = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(1))
    full = GRWLoss(5, 0.5)(Z, return_terms=True)
    assert torch.equal(GRWTerm(5, 0.5, "loss")(Z), full.loss)
    assert torch.equal(GRWTerm(5, 0.5, "scale")(Z), full.scale)
    assert GRWTerm(5, 0.5, "ordering")(Z) == pytest.approx(float(GRWLoss(5, alpha=0.0)(Z)))  # ordering only is α = 0
    with pytest.raises(ValueError, match="term must be"):
        GRWTerm(5, 0.5, "velocity")


def test_run_settings_give_a_fixed_step_budget():
    settings = RunSettings(steps=400, batch_size=16)
    config = settings.config(1000, seed=3)
    assert (config.batch_size, config.epochs, config.seed) == (16, 7, 3)  # 62 steps per epoch
    assert config.warmup_epochs == pytest.approx(0.35)
    small = RunSettings(steps=200, batch_size=32).config(30, seed=0)
    assert (small.batch_size, small.epochs) == (30, 200)  # one step per epoch


def test_the_baseline_logs_the_grw_loss_without_being_trained_on_it():
    config = AirplanesConfig(n_train=12, n_test=6, frames=10, size=16, seed=3)
    rendered = render_airplanes(config, "train", progress=False)
    train = AirplanesDataset(rendered["videos"], rendered["labels"])
    settings = RunSettings(AirplanesModel(embed_dim=8, width=4, stages=2, head_heads=2), steps=3, batch_size=4)
    baseline = train_and_score(train, train, settings, seed=0, lam=0.0)
    assert all(h["train_grw"] > 0 for h in baseline.history)  # logged
    seed_everything(0)
    untouched = fit(build_model(settings.model, 3), train, None, settings.config(12, 0))  # no regularizer at all
    assert [h["train_ce"] for h in untouched.history] == [h["train_ce"] for h in baseline.history]  # trained the same
    assert 0 <= baseline.accuracy <= 1 and baseline.predictions.embeddings.shape == (12, 10, 8)


def test_runs_in_several_processes_equal_runs_one_after_another():
    config = AirplanesConfig(n_train=24, n_test=6, frames=10, size=16, seed=3)
    rendered = render_airplanes(config, "train", progress=False)
    pool = AirplanesDataset(rendered["videos"], rendered["labels"])
    p = resolve_parameters("laptop", {"sizes": [9, 12], "seeds": [0, 1], "frames": 10, "size": 16, "width": 4,
                                      "stages": 2, "K": 8, "heads": 2, "steps": {"per_frame": 3, "causal": 2},
                                      "batch_size": 4})
    settings = encoder_settings(p, alpha=0.5, device="cpu")
    kernels_and_steps = {e: (s.model.temporal_kernel, s.steps) for e, s in settings.items()}
    assert kernels_and_steps == {"per_frame": (1, 3), "causal": (3, 2)}
    study = {"sizes": [9, 12], "seeds": [0, 1], "arms": {"baseline": 0.0, "grw": 0.1}, "progress": False}
    serial = run_study(pool, pool, settings, **study)
    parallel = run_study(pool, pool, settings, processes=2, **study)
    for encoder in ENCODERS:
        for arm in study["arms"]:
            for size in study["sizes"]:
                for one, other in zip(serial[encoder][arm][size], parallel[encoder][arm][size]):
                    assert one.accuracy == other.accuracy
                    assert one.history[-1]["train_loss"] == other.history[-1]["train_loss"]
                    assert torch.equal(one.predictions.logits, other.predictions.logits)
    first = serial["per_frame"]["baseline"][9][0]
    assert len(first.history) == 2  # 3 steps, 2 per epoch of 9 clips
    assert len(serial["causal"]["baseline"][9][0].history) == 1
    # the trained model comes back: its classify() of the stored Z gives the stored logits
    assert torch.allclose(first.model.classify(first.predictions.embeddings), first.predictions.logits, atol=1e-6)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_study(pool, pool, settings, processes=0, **study)


def test_train_many_runs_each_job_with_its_own_regularizer():
    config = AirplanesConfig(n_train=12, n_test=6, frames=10, size=16, seed=3)
    rendered = render_airplanes(config, "train", progress=False)
    train = AirplanesDataset(rendered["videos"], rendered["labels"])
    settings = RunSettings(AirplanesModel(embed_dim=8, width=4, stages=2, head_heads=2), steps=3, batch_size=4)
    scale, default = train_many([Job(train, train, settings, 0, 0.1, GRWTerm(5, 1.0, "scale")),
                                 Job(train, train, settings, 0, 0.1)], progress=False)
    assert scale.history[0]["train_grw"] != default.history[0]["train_grw"]  # the scale term alone, then the whole loss
    again = train_and_score(train, train, settings, seed=0, lam=0.1)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in default.history]


def test_pose_tracking_ranks_distances_against_angles():
    squares = torch.arange(4.0) ** 2  # pair distances 1, 4, 9, 3, 8, 5: no two equal
    between = (squares[:, None] - squares[None, :]).abs()
    angles = torch.stack([between, 1.1 * between])  # [2, 4, 4]: the second clip turns 1.1 times as fast
    Z = torch.stack([squares, 1.1 * squares])[:, :, None]  # and its embedding moves 1.1 times as fast
    assert pose_tracking(Z, angles) == pytest.approx(1.0)  # a larger turn, a larger distance, whichever the clip
    slow = torch.stack([squares, 0.4 * squares])[:, :, None]  # the faster turn now moves Z less: not one scale
    # the twelve pairs ranked by hand (no ties): rank differences 1, 4, 1, 3, 2, 3 and 1, 2, 4, 1, 3, 3, Σd² = 80
    assert pose_tracking(slow, angles) == pytest.approx(1 - 6 * 80 / (12 * 143))  # 1 - 6 Σd² / (n (n² - 1))
    ties = torch.stack([between, between])  # equal angles share their rank: same Z in both clips gives 1 exactly
    assert pose_tracking(torch.stack([squares, squares])[:, :, None], ties) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="angles \\[n, N, N\\]"):
        pose_tracking(Z, angles[:, :3])


def test_prefix_accuracy_classifies_after_each_frame():
    labels = torch.tensor([0, 1])

    def classify(Z: torch.Tensor) -> torch.Tensor:  # predicts class 1 once the running sum is positive
        total = Z.sum(dim=(1, 2))
        return torch.stack([-total, total], dim=1)

    Z = torch.tensor([[[-1.0], [2.0], [-5.0]], [[1.0], [-3.0], [4.0]]])  # sums: -1, 1, -4 and 1, -2, 2
    assert prefix_accuracy(classify, Z, labels) == [1.0, 0.0, 1.0]
