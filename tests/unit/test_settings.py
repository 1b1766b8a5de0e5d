"""Typed settings (robustmaps.settings): built from the config in one place, refusing what they
do not know, and matching the schema's keys, so that a key added to the schema cannot be
silently ignored by the method that should read it."""

import dataclasses

import pytest

from robustmaps import config as rmconfig
from robustmaps.config import SEARCH_KEYS, ConfigError, hpo_params, saliency_params
from robustmaps.settings import Faithfulness, Lots, Saliency, Search, Searched, Sobol, SyntheticCohort


@pytest.fixture(scope="module")
def defaults():
    return rmconfig.validate(rmconfig.load(rmconfig.SCHEMA.parent / "config.yaml"))


def test_every_method_gets_exactly_its_settings_and_they_build(defaults):
    for method in defaults["saliency"]["methods"]:
        s = Saliency.of(saliency_params(defaults, method))
        assert s.batch_size == defaults["saliency"]["batch_size"] and s.seed == defaults["saliency"]["seed"]
        own = [f.name for f in dataclasses.fields(s) if dataclasses.is_dataclass(getattr(s, f.name))]
        assert own == ([method] if method in ("smoothgrad", "occlusion", "lots", "actmax") else [])
        assert (s.target is None) == (method == "actmax")
    lots = Saliency.of(saliency_params(defaults, "lots")).lots
    assert isinstance(lots, Lots) and lots.alpha == defaults["saliency"]["lots"]["alpha"]
    assert Saliency.of(saliency_params(defaults, "actmax")).actmax.classes == tuple(
        defaults["saliency"]["actmax"]["classes"])


def test_the_settings_cover_the_schema_sections(defaults):
    """Every results key of the schema's sections has a field (resources and model lists excepted)."""
    sal = defaults["saliency"]
    for name in ("smoothgrad", "occlusion", "lots", "actmax"):
        own = Saliency.of(saliency_params(defaults, name)).section(name)
        assert set(sal[name]) == {f.name for f in dataclasses.fields(own)}, name
    assert set(sal["faithfulness"]) == {f.name for f in dataclasses.fields(Faithfulness)}
    sobol = {k for k in defaults["sobol"] if k not in ("models", "device", "threads")}
    assert sobol == {f.name for f in dataclasses.fields(Sobol)}
    assert Sobol.of({k: defaults["sobol"][k] for k in sobol}).analysis()["n"] == defaults["sobol"]["n"]
    # a synthetic cohort's section, nested sections included, builds whole from the defaults
    spec = next(c["synthetic"] for c in defaults["data"]["cohorts"].values() if c["source"] == "synthetic")
    cohort = SyntheticCohort.of(spec, "main")
    assert cohort.atrophy.severity == tuple(spec["atrophy"]["severity"]) and cohort.site.gamma == spec["site"]["gamma"]
    assert set(spec) == {f.name for f in dataclasses.fields(SyntheticCohort)}


def test_the_search_settings_build_from_the_paper_config():
    paper = rmconfig.load(rmconfig.SCHEMA.parent / "paper.yaml")
    search = Search.of(hpo_params(paper))
    assert set(search.space) == set(paper["hpo"]["space"]) <= set(SEARCH_KEYS)
    assert all(isinstance(v, Searched) for v in search.space.values())
    assert search.space["lr"].log and search.space["filters"].choices == (4, 8, 16, 32)
    assert search.hyperband.reduction_factor == paper["hpo"]["hyperband"]["reduction_factor"]
    assert search.train == {k: paper["hpo"][k] for k in ("max_epochs", "patience", "min_epochs", "amp")}
    with pytest.raises(ConfigError, match=r"hpo\.space\.lr: unknown key\(s\) logarithmic"):
        Search.of({**hpo_params(paper), "space": {"lr": {"low": 1e-5, "high": 1e-2, "logarithmic": True}}})


def test_unknown_missing_and_malformed_keys_are_named():
    base = {"batch_size": 2, "seed": 0, "target": "predicted"}
    with pytest.raises(ConfigError, match=r"saliency: unknown key\(s\) n_sample"):
        Saliency.of({**base, "n_sample": 3})
    with pytest.raises(ConfigError, match=r"saliency\.smoothgrad\.stdev_spread: missing"):
        Saliency.of({**base, "smoothgrad": {"n_samples": 3}})
    with pytest.raises(ConfigError, match=r"saliency\.occlusion: expected a mapping"):
        Saliency.of({**base, "occlusion": [4, 2]})
    with pytest.raises(ConfigError, match=r"saliency\.lots: the settings of lots were not given"):
        Saliency.of(base).section("lots")
    with pytest.raises(ConfigError, match=r"sobol\.target: missing"):
        Sobol.of({})
    # already built settings pass through; they are frozen
    s = Saliency.of(base)
    assert Saliency.of(s) is s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3
    with pytest.raises(ConfigError, match=r"saliency\.faithfulness\.baseline: missing"):
        Faithfulness.of({"steps": 5, "blur_sigma_mm": 6.0, "coherency": True, "max_sessions": None})


def test_the_explainer_takes_typed_settings_only():
    from torch import nn

    from robustmaps.saliency import Explainer

    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Saliency.of"):
        Explainer(model, "vanilla", {"batch_size": 2, "seed": 0})
    with pytest.raises(ConfigError, match="saliency.smoothgrad"):
        Explainer(model, "smoothgrad", Saliency.of({"batch_size": 2, "seed": 0}))
