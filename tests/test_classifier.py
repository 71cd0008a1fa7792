"""Tests of pipeline.classifier: the DisCo term, a real (short) training, evaluation and export.

The weighted distance correlation is checked against the ``dcor`` package (unit weights, and
integer weights by repeating events); the training runs Lightning for real on small skim-like
parquet files whose background has a feature that carries m_mumu, so an unregularised network
sculpts and a DisCo-regularised one must not.
"""

from __future__ import annotations

import json

import dcor
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.classifier import evaluate, export
from pipeline.classifier.data import load_population, split_of
from pipeline.classifier.disco import distance_corr_sq, lambda_tag
from pipeline.classifier.model import Scorer
from pipeline.classifier.train import train_classifier
from pipeline.config import validate_config
from pipeline.errors import ConfigError, MissingColumnError

FEATURES = ["mu1_pt", "m_jj", "j2_eta", "n_jets"]


# --------------------------------------------------------------------------------------------
# the DisCo term
# --------------------------------------------------------------------------------------------
def _batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    x = g.normal(size=n)
    y = np.tanh(0.7 * x + 0.5 * g.normal(size=n)) + 0.1 * x**2
    return x, y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dcor_matches_dcor_package_unweighted(dtype):
    x, y = _batch(600, 11)  # a held-out batch, never used elsewhere
    ours = float(distance_corr_sq(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)))
    ref = dcor.distance_correlation_sqr(x, y)
    assert ref > 0.1
    assert abs(ours - ref) < 1e-4
    # independent variables: small; identical variables: 1
    assert float(distance_corr_sq(torch.tensor(x), torch.tensor(_batch(600, 12)[0]))) < 0.02
    assert float(distance_corr_sq(torch.tensor(x), torch.tensor(x))) == pytest.approx(1.0, abs=1e-12)


def test_dcor_weighted_equals_repeated_events():
    x, y = _batch(150, 3)
    w = np.random.default_rng(4).integers(1, 5, size=150)
    ours = float(distance_corr_sq(torch.tensor(x), torch.tensor(y), torch.tensor(w, dtype=torch.float64)))
    ref = dcor.distance_correlation_sqr(np.repeat(x, w), np.repeat(y, w))
    assert abs(ours - ref) < 1e-4
    # and the weights matter: the unweighted value differs
    assert abs(float(distance_corr_sq(torch.tensor(x), torch.tensor(y))) - ref) > 1e-3
    # scale invariance of the weights (normalised to mean 1 inside)
    ours_scaled = float(distance_corr_sq(torch.tensor(x), torch.tensor(y), torch.tensor(7.5 * w, dtype=torch.float64)))
    assert ours_scaled == pytest.approx(ours, abs=1e-12)


def test_dcor_is_differentiable():
    x, y = _batch(12, 5)
    w = torch.tensor(np.random.default_rng(6).uniform(0.5, 2.0, 12))
    xt = torch.tensor(x)
    yt = torch.tensor(y, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: distance_corr_sq(xt, s, w), (yt,), eps=1e-6, atol=1e-6)
    loss = distance_corr_sq(xt, yt, w)
    loss.backward()
    assert torch.isfinite(yt.grad).all() and yt.grad.abs().sum() > 0


def test_lambda_tag():
    assert [lambda_tag(v) for v in (0, 0.0, 0.5, 2, 20.0, 1e3)] == ["0", "0", "0.5", "2", "20", "1000"]
    with pytest.raises(ValueError):
        lambda_tag(-1)


# --------------------------------------------------------------------------------------------
# figures of merit
# --------------------------------------------------------------------------------------------
def test_jsd_and_rejection():
    assert evaluate.jsd_bits([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0)
    assert evaluate.jsd_bits([1, 0], [0, 1]) == pytest.approx(1.0)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    label = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    r50, cut = evaluate.r_at(score, label, np.ones(8), 0.5)
    assert 0.7 <= cut < 0.8 and r50 == float("inf")  # the 2 best signal events pass, no background
    r75, _ = evaluate.r_at(score, label, np.ones(8), 0.75)
    assert r75 == pytest.approx(4.0)  # 1 of 4 background events passes


def test_split_is_a_function_of_the_event_number():
    ev = np.arange(20000, dtype=np.uint64)
    s = split_of(ev, 0.3, 0.15)
    assert abs((s == "test").mean() - 0.3) < 0.02 and abs((s == "val").mean() - 0.15) < 0.02
    assert (split_of(ev[::-1], 0.3, 0.15) == s[::-1]).all()


# --------------------------------------------------------------------------------------------
# a real training on small skim-like files
# --------------------------------------------------------------------------------------------
def _skim(path, n: int, signal: bool, seed: int, drop: str | None = None) -> str:
    """Skim-like parquet: m_jj separates (independent of the mass); mu1_pt ~ m_mumu / 2 carries the mass."""
    g = np.random.default_rng(seed)
    m = g.normal(125.0, 2.0, n) if signal else 110.0 + g.exponential(20.0, n)
    m = m[(m > 110) & (m < 150)]
    n = len(m)
    n_jets = g.integers(1, 4, n)
    cols = {
        "mu1_pt": m / 2 * (1 + 0.01 * g.normal(size=n)),
        "m_jj": g.lognormal(6.5 if signal else 5.6, 0.5, n),
        "j2_eta": np.where(n_jets >= 2, g.normal(0, 2.5 if signal else 1.5, n), np.nan),
        "n_jets": n_jets.astype(np.int32),
        "m_mumu": m,
        "event": g.permutation(10 * n)[:n].astype(np.uint64),
        "weight": g.uniform(0.5, 1.5, n) * (0.01 if signal else 3.0),
        "sample": "sig" if signal else "bkg",
    }
    if drop:
        cols.pop(drop)
    pd.DataFrame(cols).to_parquet(path)
    return str(path)


ROLES = {"sig": "signal", "bkg": "background"}


def _cfg(lambdas):
    return {
        "seed": 7,
        "samples": {"sig": {"role": "signal"}, "bkg": {"role": "background"}},
        "classifier": {
            "lambdas": lambdas, "chosen_lambda": lambdas[-1], "features": FEATURES,
            "population": {"mmumu_min_gev": 110.0, "mmumu_max_gev": 150.0, "min_jets": 0},
            "split": {"test_fraction": 0.3, "val_fraction": 0.15},
            "hidden": [16], "dropout": 0.0, "lr": 0.01, "weight_decay": 0.0, "batch_size": 512,
            "max_epochs": 10, "patience": 4, "threads": 1,
            "evaluation": {"jsd_bins": 10, "plot_bins": 10, "floor_repeats": 5, "efficiencies": [0.5, 0.8],
                           "dcor_max_events": 2000},
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("disco")
    skims = {"sig": _skim(d / "sig.parquet", 2000, True, 1), "bkg": _skim(d / "bkg.parquet", 3000, False, 2)}
    cfg = _cfg([0, 20])
    scorers, summaries = {}, {}
    for lam in cfg["classifier"]["lambdas"]:
        tag = lambda_tag(lam)
        scorers[tag] = str(d / f"lambda_{tag}" / "scorer.pt")
        summaries[tag] = train_classifier(skims, ROLES, lam, scorers[tag], cfg["classifier"], cfg["seed"],
                                          work_dir=str(d / "pl"))
    metrics = evaluate.evaluate_classifiers(skims, ROLES, scorers, cfg["classifier"], cfg["seed"], str(d / "out"),
                                           str(d / "plots"))
    return d, skims, cfg, scorers, summaries, metrics


def test_disco_reduces_background_dcor(trained):
    d, _, _, _, summaries, metrics = trained
    m0, m20 = metrics["lambdas"]["0"], metrics["lambdas"]["20"]
    assert summaries["0"]["features"] == FEATURES and summaries["0"]["epochs_run"] >= 1
    assert m0["auc"] > 0.8  # it learned something
    assert m0["dcor_weighted_sq"] > 0.01  # lambda = 0 uses mu1_pt, i.e. the mass
    assert m20["dcor_weighted_sq"] < 0.3 * m0["dcor_weighted_sq"]
    assert m20["inv_jsd"] > 5 * m0["inv_jsd"]
    assert m20["auc"] > 0.58  # m_jj still separates
    for mt in (m0, m20):  # the dcor package's unweighted cross-check is of the same size
        assert mt["dcor_sq"] == pytest.approx(mt["dcor"] ** 2)
        assert mt["inv_jsd_floor"] > 0 and mt["n_test_background"] > 0
    scores = pd.read_parquet(d / "out" / "lambda_0" / "scores.parquet")
    assert list(scores.columns) == ["score", "label", "m_mumu", "weight", "sample"]
    assert len(scores) == m0["n_test_signal"] + m0["n_test_background"]
    assert ((scores["score"] >= 0) & (scores["score"] <= 1)).all()
    for name in ("roc.png", "r50_vs_invjsd.png", "mmumu_sculpting_lambda_0.png", "mmumu_sculpting_lambda_20.png"):
        assert (d / "plots" / name).stat().st_size > 1000


def test_training_is_deterministic(trained, tmp_path):
    d, skims, cfg, scorers, _, _ = trained
    again = tmp_path / "again.pt"
    train_classifier(skims, ROLES, 20, str(again), cfg["classifier"], cfg["seed"], work_dir=str(tmp_path / "pl"))
    x = torch.tensor(np.random.default_rng(0).normal(size=(50, len(FEATURES))) * 50 + 100, dtype=torch.float32)
    assert torch.equal(torch.jit.load(str(again))(x), torch.jit.load(scorers["20"])(x))


def test_export_round_trip(trained):
    d, skims, cfg, scorers, _, _ = trained
    meta = export.export_model(scorers, _metrics_file(trained), cfg["classifier"], str(d / "model.pt"),
                               str(d / "model.json"))
    assert meta["features"] == FEATURES and meta["lambda"] == 20.0
    module = torch.jit.load(str(d / "model.pt"))
    test = load_population(skims, {"sig": "signal", "bkg": "background"}, cfg["classifier"])["test"]
    x = torch.from_numpy(test.x)
    assert torch.isnan(x).any()  # events with one jet: j2_eta is NaN
    with torch.no_grad():
        out = module(x)
    assert out.dtype == torch.float32 and out.shape == (len(test),)
    assert torch.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    # the in-process model: the same scorer class with the state of the exported one
    ref = Scorer(len(FEATURES), cfg["classifier"]["hidden"])
    ref.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert torch.allclose(out, ref.eval()(x), atol=1e-6, rtol=0)
    # threshold: half of the weighted test signal passes
    sig = test.label == 1
    passed = out.numpy()[sig] > meta["threshold_eff50"]
    assert abs(test.weight[sig][passed].sum() / test.weight[sig].sum() - 0.5) < 0.02
    loaded = export.load_scorer(str(d / "model.pt"))
    frame = pd.read_parquet(skims["sig"])
    with torch.no_grad():
        direct = module(torch.tensor(frame[FEATURES].to_numpy(np.float32))).numpy()
    assert np.allclose(loaded(frame), direct)
    with pytest.raises(MissingColumnError, match="m_jj"):
        loaded(frame.drop(columns=["m_jj"]))


def _metrics_file(trained) -> str:
    d, *_, metrics = trained
    path = d / "metrics.json"
    path.write_text(json.dumps(metrics))
    return str(path)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_missing_column_names_column_and_file(tmp_path):
    skims = {"sig": _skim(tmp_path / "sig.parquet", 300, True, 1),
             "bkg": _skim(tmp_path / "bkg.parquet", 300, False, 2, drop="m_jj")}
    with pytest.raises(MissingColumnError) as err:
        train_classifier(skims, ROLES, 0, str(tmp_path / "s.pt"), _cfg([0])["classifier"], 7)
    assert "'m_jj'" in str(err.value) and "bkg.parquet" in str(err.value)
    assert not (tmp_path / "s.pt").exists()


def test_bad_config(tmp_path, laptop_config):
    cfg = {**laptop_config, "classifier": {**laptop_config["classifier"], "lambdas": [0, 5], "chosen_lambda": 3}}
    with pytest.raises(ConfigError, match="chosen_lambda"):
        validate_config(cfg)  # checked with the rest of the config, before the DAG is built
    cfg = _cfg([0])
    cfg["classifier"]["features"] = ["m_mumu", "m_jj"]
    skims = {"sig": _skim(tmp_path / "sig.parquet", 300, True, 1), "bkg": _skim(tmp_path / "bkg.parquet", 300, False, 2)}
    with pytest.raises(ConfigError, match="m_mumu"):
        train_classifier(skims, ROLES, 0, str(tmp_path / "s.pt"), cfg["classifier"], cfg["seed"])
