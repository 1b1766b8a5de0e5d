from pathlib import Path

import pytest
import yaml

from robustmaps import config as rmconfig
from robustmaps.grid import working_grid
from robustmaps.jobs.common import validate
from robustmaps.sweep import sweep_points

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml", REPO / "tests" / "config" / "smoke.yaml"]


def base():
    return yaml.safe_load((REPO / "tests" / "config" / "smoke.yaml").read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = rmconfig.load(path)
    assert cfg["split"]["n_folds"] >= 2
    assert "synthetic" in cfg["data"]["cohorts"]["main"] or cfg["data"]["cohorts"]["main"]["source"] == "caps"


def test_paper_config_is_the_papers_protocol():
    cfg = rmconfig.load(REPO / "config" / "paper.yaml")
    g = working_grid(cfg)
    assert g.shape == (121, 145, 121) and g.voxel_size == 1.5
    assert cfg["split"] == {**cfg["split"], "n_folds": 5, "seed": 2, "test_per_class": 100}
    assert {c["source"] for c in cfg["data"]["cohorts"].values()} == {"caps"}


def test_defaults_are_filled():
    cfg = rmconfig.validate({"data": {"cohorts": {"main": {}}}})
    assert cfg["qc"]["min_max_gm"] == 0.95 and cfg["split"]["seed"] == 2
    assert cfg["data"]["cohorts"]["main"]["synthetic"]["atrophy"]["severity"] == [0.15, 0.35]
    assert cfg["data"]["grid"]["shape"] == [121, 145, 121]


def test_negative_control_overlay_sets_severity_zero():
    cfg = rmconfig.load(REPO / "tests" / "config" / "smoke.yaml", REPO / "tests" / "config" / "negative_control.yaml")
    for c in cfg["data"]["cohorts"].values():
        assert c["synthetic"]["atrophy"]["severity"] == [0.0, 0.0]
        assert c["synthetic"]["n_cn"] > 0  # the overlay keeps the rest of the smoke cohort


def mutate(path, value):
    cfg = base()
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


@pytest.mark.parametrize("path,value,expect", [
    ("split.n_fold", 3, r"split: Additional properties are not allowed \('n_fold' was unexpected\)"),
    ("split.n_folds", "five", r"split.n_folds: 'five' is not of type 'integer'"),
    ("split.n_folds", 1, r"split.n_folds: 1 is less than the minimum of 2"),
    ("preprocess.dtype", "float64", r"preprocess.dtype: 'float64' is not one of"),
    ("qc.min_max_gm", 2, r"qc.min_max_gm: 2 is greater than the maximum"),
    ("data.labels", {"CN": 0, "AD": 0}, r"data.labels: needs one diagnosis mapped to 0 and one to 1"),
    ("data.cohorts.main.synthetic.sessions_min", 5, r"data.cohorts.main.synthetic.sessions_min: 5 > sessions_max"),
    ("data.cohorts.main.synthetic.atrophy", {"rois": [{"name": "Hipocampus", "weight": 1}]},
     r"data.cohorts.main.synthetic.atrophy.rois: unknown ROI name"),
    ("data.cohorts.main.source", "caps", r"data.cohorts.main: 'caps' is a required property"),
    ("preprocess.voxel_size", 1.0, r"preprocess: working voxel size 1.0 mm is smaller"),
    ("split.import_dir", "/no/such/dir", r"split.import_dir: /no/such/dir is not a folder"),
    ("train.folds", [0, 2], r"train.folds: fold 2 does not exist: split.n_folds is 2"),
    ("train.seeds", [], r"train.seeds: \[\] should be non-empty"),
    ("train.architecture", {"name": "NoSuchNet"}, r"train.architecture: NoSuchNet: unknown architecture"),
    ("train.architecture", {"name": "paper", "n_blocks": 3, "sub_blocks": [1, 2]},
     r"train.architecture: paper: sub_blocks: 2 values for 3 blocks"),
    ("train.architecture", {"name": "paper", "nblocks": 3}, r"train.architecture: paper: .*unexpected keyword"),
    ("train.normalisation", "l2", r"train.normalisation: 'l2' is not one of"),
    ("saliency.methods", ["gradcam", "deeplift"], r"saliency.methods.1: 'deeplift' is not one of"),
    ("saliency.target", "MCI", r"saliency.target: 'MCI' is not one of data.labels .* or predicted"),
    ("saliency.models", [{"fold": 5, "seed": 0}], r"saliency.models: fold 5 seed 0 is not trained"),
    ("saliency.occlusion", {"patch": 4, "stride": 6}, r"saliency.occlusion.stride: 6 > patch 4"),
    ("saliency.actmax", {"classes": ["AD", "EMCI"]}, r"saliency.actmax.classes: 'EMCI' is not one of"),
    ("sobol.n", 100, r"sobol.n: 100 is not a power of 2"),
    ("sobol.bounds", [1.5, 0.5], r"sobol.bounds: \[1.5, 0.5\] is empty"),
])
def test_bad_config_names_the_key(path, value, expect):
    with pytest.raises(rmconfig.ConfigError, match=expect):
        validate(mutate(path, value))


def test_shallow_validation_skips_only_the_heavy_checks():
    """Cluster jobs re-read the Snakefile with deep=False: no network built, no atlas read; the
    library's own validation (robustmaps.config) never does either."""
    cfg = mutate("train.architecture", {"name": "NoSuchNet"})
    assert validate(cfg, deep=False)["train"]["architecture"]["name"] == "NoSuchNet"
    assert rmconfig.validate(mutate("train.architecture", {"name": "NoSuchNet"}))["train"]["architecture"]
    roi = mutate("data.cohorts.main.synthetic.atrophy", {"rois": [{"name": "Hipocampus", "weight": 1}]})
    assert validate(roi, deep=False) is roi
    with pytest.raises(rmconfig.ConfigError, match="train.folds"):
        rmconfig.validate(mutate("train.folds", [7]))


def test_schema_and_readme_document_the_same_keys():
    """Every leaf key of the schema appears in config/README.md (by its dotted path)."""
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    readme = (REPO / "config" / "README.md").read_text()

    def leaves(node, prefix):
        default = node.get("default")
        node = resolve(node)
        props = node.get("properties")
        if not props or (isinstance(default, dict) and default):  # e.g. age_mean: {CN, AD}
            yield prefix
            return
        for key, sub in props.items():
            yield from leaves(sub, f"{prefix}.{key}" if prefix else key)

    def resolve(node):
        if "$ref" in node:
            return schema["$defs"][node["$ref"].split("/")[-1]]
        return node

    keys = {k.replace("data.cohorts.main.", "data.cohorts.*.").replace("data.cohorts.independent.", "data.cohorts.*.")
            for k in leaves(schema, "")}
    missing = sorted(k for k in keys if f"`{k}`" not in readme)
    assert missing == [], f"undocumented config keys: {missing}"


def test_defaults_are_the_values_the_study_chose():
    """Study 3.1: l1 = 1e-4 and l2 = 0.01 (1e-3 was only held fixed during the b1 / b2 grid); the
    sweep point {l1 1e-4, l2 0.1} needed lr 0.01; masks enter the ROI comparison by the sum of
    1 - m over each ROI (2.4)."""
    cfg = rmconfig.validate({"data": {"cohorts": {"main": {}}}})
    masks = cfg["masks"]
    assert (masks["l1"], masks["l2"], masks["b1"], masks["b2"], masks["lr"]) == (1e-4, 0.01, 0.1, 1, 0.1)
    points = sweep_points(cfg)
    assert len(points) == 12
    assert [p["lr"] for p in points.values() if (p["l1"], p["l2"]) == (1e-4, 0.1)] == [0.01]
    assert {p["lr"] for p in points.values() if (p["l1"], p["l2"]) != (1e-4, 0.1)} == {0.1}
    assert [p["l2"] for p in points.values() if p["b1"] != 0.1 or p["b2"] != 1] == [1e-3] * 5
    assert cfg["roi"]["masks"]["reduction"] == "sum" and cfg["masks"]["score"] == "probability"
    assert cfg["masks"]["norm"] == "sum"
