"""SVCCA/PWCCA on analytic cases, and layer similarity of covseg networks through forward hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from covseg.training.config import NetworkConfig
from covseg.training.networks import build_network
from covseg.training.representation import (
    cca,
    feature_reuse_rows,
    layer_similarity,
    pwcca,
    svcca,
    tracked_layers,
    write_similarity_tables,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3000, 12))


def test_identical_and_invertible_transform_give_one() -> None:
    assert svcca(X, X) == pytest.approx(1.0)
    assert pwcca(X, X) == pytest.approx(1.0)
    transform = RNG.normal(size=(12, 12)) + 3 * np.eye(12)  # invertible
    y = X @ transform + 5.0  # a shift changes nothing either
    assert svcca(X, y) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(X, y) == pytest.approx(1.0, abs=1e-6)


def test_independent_activations_give_low_similarity() -> None:
    y = RNG.normal(size=X.shape)
    assert svcca(X, y) < 0.1
    assert pwcca(X, y) < 0.1


def test_half_shared_features() -> None:
    y = np.concatenate([X[:, :6] @ RNG.normal(size=(6, 6)), RNG.normal(size=(3000, 6))], axis=1)
    rho, variates = cca(X, y)
    assert np.allclose(rho[:6], 1.0, atol=1e-6) and np.all(rho[6:] < 0.15)
    assert np.allclose(np.linalg.norm(variates, axis=0), 1.0)
    assert svcca(X, y, keep_variance=1.0) == pytest.approx(0.5, abs=0.05)


def test_pwcca_weights_directions_by_the_variance_they_explain() -> None:
    signal, noise = RNG.normal(size=(3000, 5)), RNG.normal(size=(3000, 5))
    x = np.concatenate([10 * signal, noise], axis=1)  # shared part dominates x's variance
    y = np.concatenate([signal @ RNG.normal(size=(5, 5)), RNG.normal(size=(3000, 5))], axis=1)
    plain_mean = float(np.mean(cca(x, y)[0]))
    assert plain_mean == pytest.approx(0.5, abs=0.05)
    assert pwcca(x, y) > 0.9


def _net(seed: int, family: str = "unet") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(NetworkConfig(family=family, features=(4, 8, 8), strides=(1, 2, 2), deep_supervision=0,
                                       fusion_min_channels=2))


def test_layer_similarity_of_networks(tmp_path: Path) -> None:
    inputs = torch.randn(2, 1, 16, 16, 16)
    a, b = _net(0), _net(1)
    same = layer_similarity(a, a, inputs, max_samples=2000)
    assert [s.layer for s in same] == ["encoder.level0", "encoder.level1", "encoder.level2",
                                       "decoder.level1", "decoder.level0"]
    assert all(s.svcca == pytest.approx(1.0, abs=1e-6) and s.pwcca == pytest.approx(1.0, abs=1e-6) for s in same)
    other = layer_similarity(a, b, inputs, max_samples=2000)
    assert all(s.pwcca < 0.999 for s in other)
    assert other[0].channels == 4 and other[0].samples == 2000
    rows = feature_reuse_rows(same, other)
    assert all(r["feature_reuse"] is not None and float(r["feature_reuse"]) > 0 for r in rows)  # type: ignore[arg-type]
    assert all(r["note"] == "" for r in rows)  # 2000 samples for at most 8 channels
    thin = feature_reuse_rows(layer_similarity(a, b, inputs, max_samples=40))
    assert "only 40 samples for 8 channels" in str(thin[-2]["note"]) and thin[0]["note"] == ""
    csv_path, md_path = write_similarity_tables(rows, tmp_path, title="reuse")
    assert csv_path.read_text().startswith("layer,channels,samples,pwcca_pretrained_vs_finetuned")
    assert "encoder.level0" in md_path.read_text()


def test_hybrid_adapted_encoder_matches_plain_encoder() -> None:
    hybrid = _net(2, "hybrid")
    names = [n for n, _ in tracked_layers(hybrid)]
    assert names[:3] == ["adapted.level0", "adapted.level1", "adapted.level2"]
    assert "dedicated.level0" in names
    result = layer_similarity(_net(0), hybrid, torch.randn(1, 1, 16, 16, 16), max_samples=1000)
    assert [s.layer for s in result] == ["encoder.level0", "encoder.level1", "encoder.level2",
                                         "decoder.level1", "decoder.level0"]
