"""The study's parts on hand-computed values: presets, paired intervals, the study summary, smoothness where the loss
acts, effective rank, the velocity-direction probe, the GRW terms as regularizers, and one baseline run."""

import math

import pytest
import torch

from grw.data.airplanes import AirplanesConfig, AirplanesDataset, render_airplanes
from grw.loss import GRWLoss
from grw.metrics import effective_rank, paired_difference, student_t_quantile, velocity_direction_probe, window_smoothness
from grw.recipes.airplanes import AirplanesModel, build_model
from grw.study import PRESETS, GRWTerm, RunSettings, resolve_parameters, run_study, summarize_study, train_and_score
from grw.train import fit, seed_everything


def test_an_explicit_parameter_wins_and_unset_ones_come_from_the_preset():
    resolved = resolve_parameters("laptop", {"seeds": [7, 8], "steps": None, "size": 32})
    assert resolved["seeds"] == [7, 8] and resolved["size"] == 32  # passed: kept
    assert resolved["steps"] == PRESETS["laptop"]["steps"] and resolved["sizes"] == PRESETS["laptop"]["sizes"]
    assert resolve_parameters("paper", {"steps": None})["steps"] == PRESETS["paper"]["steps"] != PRESETS["laptop"]["steps"]
    assert resolve_parameters("paper", {"size": 0})["size"] == 0  # a falsy value is still an explicit value
    with pytest.raises(ValueError, match="unknown preset 'full'; expected one of laptop, paper"):
        resolve_parameters("full", {})
    with pytest.raises(ValueError, match="no parameter called epochs"):
        resolve_parameters("laptop", {"epochs": 3})


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
    accuracy = {"baseline": {10: [0.5, 0.6, 0.7], 100: [0.8, 0.8, 0.9]}, "grw": {10: [0.6, 0.6, 0.8], 100: [0.8, 0.9, 0.9]}}
    study, headline = summarize_study(accuracy, [0, 1, 2])
    assert study["sizes"] == [10, 100] and study["seeds"] == [0, 1, 2]
    assert study["baseline"]["10"] == [0.5, 0.6, 0.7] and study["grw"]["100"] == [0.8, 0.9, 0.9]
    gain = study["paired_gain_pp"]["10"]  # gains 10, 0, 10 points
    half = 4.302653 * math.sqrt(100 / 3) / math.sqrt(3)
    assert gain["mean"] == pytest.approx(20 / 3) and gain["ci95"] == pytest.approx([20 / 3 - half, 20 / 3 + half], abs=1e-4)
    assert study["paired_gain_pp"]["100"]["mean"] == pytest.approx(10 / 3)
    assert headline == {"size": 10, "gain_pp": gain["mean"], "ci95": gain["ci95"], "seeds": 3}
    with pytest.raises(ValueError, match=r"expected 3 accuracies in \[0, 1\]"):
        summarize_study({"baseline": {10: [50.0, 60.0, 70.0]}, "grw": {10: [0.6, 0.6, 0.8]}}, [0, 1, 2])


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
    settings = RunSettings(AirplanesModel(embed_dim=8, width=4, stages=2, head_heads=2), steps=3, batch_size=4)
    study = dict(sizes=[9, 12], seeds=[0, 1], arms={"baseline": 0.0, "grw": 0.1}, progress=False)
    serial = run_study(pool, pool, settings, **study)
    parallel = run_study(pool, pool, settings, processes=2, **study)
    for arm in study["arms"]:
        for size in study["sizes"]:
            for one, other in zip(serial[arm][size], parallel[arm][size]):
                assert one.accuracy == other.accuracy and one.history[-1]["train_loss"] == other.history[-1]["train_loss"]
                assert torch.equal(one.predictions.logits, other.predictions.logits)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_study(pool, pool, settings, processes=0, **study)
