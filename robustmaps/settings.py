"""Typed settings at the library's boundary: small frozen dataclasses, each built in one place
(:func:`from_mapping`) from the config section (or the rule's ``params``) it mirrors.

A rule entry (robustmaps.jobs) turns its ``params`` into one of these once; the methods below it
read attributes, never keys. The schema (config/schema.yaml) stays the one home of the defaults:
a field has a default here only where a rule passes a subset of its section (a method's own
settings go only to the rules of that method, so that changing them re-runs nothing else).
:func:`from_mapping` refuses unknown and missing keys, naming them, and turns lists into tuples.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass

from .config import fail


def _dataclass_of(hint):
    """The dataclass a field's type names (also inside ``X | None``), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    return None


def from_mapping(cls, data, where: str):
    """``cls`` (a settings dataclass) from ``data`` (a mapping, or already a ``cls``); nested
    settings are built from their own mappings. ``where``: the config key, for the messages."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        fail(where, f"expected a mapping, got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    unknown = sorted(set(data) - {f.name for f in fields})
    if unknown:
        fail(where, f"unknown key(s) {', '.join(map(str, unknown))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields:
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                fail(f"{where}.{f.name}", "missing")
            continue
        value, nested = data[f.name], _dataclass_of(hints[f.name])
        if nested is not None and value is not None:
            value = from_mapping(nested, value, f"{where}.{f.name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


# ------------------------------------------------------------------- saliency (config: saliency)
@dataclass(frozen=True)
class SmoothGrad:
    n_samples: int
    stdev_spread: float


@dataclass(frozen=True)
class Occlusion:
    patch: int
    stride: int
    mode: str


@dataclass(frozen=True)
class Lots:
    target: str
    iterations: int
    tau: float
    alpha: float
    sigma_mm: float
    layer: str  # a layer name, "auto", or "output" (the logits)


@dataclass(frozen=True)
class Actmax:
    classes: tuple
    start: str
    n_starts: int
    iterations: int
    e1: float
    e2: float


@dataclass(frozen=True)
class Saliency:
    """What one method's maps depend on (:func:`robustmaps.config.saliency_params`): the
    shared keys, plus the CAM layer for the CAM family and the method's own section."""

    batch_size: int
    seed: int
    target: str | None = None  # predicted or a class name; none for actmax (it explains classes)
    layer: str = "auto"  # the CAM family's layer
    smoothgrad: SmoothGrad | None = None
    occlusion: Occlusion | None = None
    lots: Lots | None = None
    actmax: Actmax | None = None

    @classmethod
    def of(cls, params) -> Saliency:
        return from_mapping(cls, params, "saliency")

    def section(self, method: str):
        """The method's own settings; a clear error where the rule did not pass them."""
        value = getattr(self, method)
        if value is None:
            fail(f"saliency.{method}", f"the settings of {method} were not given")
        return value


@dataclass(frozen=True)
class Faithfulness:
    steps: int
    blur_sigma_mm: float
    coherency: bool
    max_sessions: int | None
    baseline: str

    @classmethod
    def of(cls, params) -> Faithfulness:
        return from_mapping(cls, params, "saliency.faithfulness")


# ---------------------------------------------------------------------------- Sobol (config: sobol)
@dataclass(frozen=True)
class Sobol:
    target: str
    images: tuple
    n_images: int
    n: int
    convergence_min: int
    bounds: tuple
    output: str
    second_order: bool
    resamples: int
    conf_level: float
    seed: int
    batch_size: int

    @classmethod
    def of(cls, params) -> Sobol:
        return from_mapping(cls, params, "sobol")

    def analysis(self) -> dict:
        """The keyword arguments of :func:`robustmaps.saliency.sobol.sobol_analysis`."""
        return {k: getattr(self, k) for k in ("n", "bounds", "output", "second_order", "resamples", "conf_level",
                                              "seed", "batch_size", "convergence_min")}


# ------------------------------------------------- a synthetic cohort (data.cohorts.<name>.synthetic)
@dataclass(frozen=True)
class Site:
    scale: float
    gamma: float


@dataclass(frozen=True)
class Atrophy:
    rois: tuple  # ({name, weight}, ...): AAL2 ROI names and the planted fraction of GM lost
    severity: tuple  # (lo, hi)
    progression_per_year: float
    smoothing_mm: float


@dataclass(frozen=True)
class SyntheticCohort:
    n_cn: int
    n_ad: int
    sessions_min: int
    sessions_max: int
    interval_months: int
    age_mean: dict  # diagnosis -> mean baseline age
    age_sd: float
    age_range: tuple
    p_male: float
    deformation_mm: float
    deformation_smoothness_mm: float
    intensity_sd: float
    intensity_smoothness_mm: float
    noise_sd: float
    age_effect: float
    site: Site
    atrophy: Atrophy
    qc_defects: int
    orientation: str
    qc_defect_scale: float
    id_prefix: str

    @classmethod
    def of(cls, spec, cohort: str = "*") -> SyntheticCohort:
        return from_mapping(cls, spec, f"data.cohorts.{cohort}.synthetic")


# ----------------------------------------------------------- the hyperparameter search (config: hpo)
@dataclass(frozen=True)
class Searched:
    """One searched parameter: a range ``{low, high[, log]}`` (integers when both bounds are
    integers and the scale is linear) or ``{choices}``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None


@dataclass(frozen=True)
class Hyperband:
    min_resource: int
    max_resource: int | None
    reduction_factor: int


@dataclass(frozen=True)
class Search:
    """The search's settings (:func:`robustmaps.config.hpo_params`): ``space`` maps each searched
    key (robustmaps.config.SEARCH_KEYS) to its :class:`Searched`; ``baseline``: trial 0's point;
    ``train``: the TrainConfig values a trial does not search (epochs, patience, ...)."""

    n_trials: int
    sampler: str
    pruner: str
    hyperband: Hyperband
    seed: int
    space: dict
    baseline: dict
    max_parameters: int
    train: dict

    @classmethod
    def of(cls, params) -> Search:
        search = from_mapping(cls, params, "hpo")
        space = {k: from_mapping(Searched, v, f"hpo.space.{k}") for k, v in search.space.items()}
        return dataclasses.replace(search, space=space)
