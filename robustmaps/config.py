"""Config: schema validation with defaults, and the checks a JSON schema cannot express.

The workflow validates with ``snakemake.utils.validate`` (which fills the schema's defaults) and
then calls :func:`check`. :func:`validate` does the same outside Snakemake (tests, tools).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .grid import working_grid
from .io import CLINICA_GM_PATTERN, InputError, missing_file_reason

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


class ConfigError(InputError):
    """A config value that cannot work: the message names the key."""


def validate(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Validate ``config`` against the schema, filling defaults in place (as Snakemake does), and
    check what crosses keys. The checks that read the atlas or build the network live above the
    library's layers, in robustmaps.jobs.common.validate (the Snakefile runs them in the main
    process only, not again in every cluster job)."""
    import jsonschema
    from jsonschema import validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = validators.validator_for(schema)

    def set_defaults(validator, properties, instance, sch):
        for prop, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, sch)

    Validator = validators.extend(base, {"properties": set_defaults})
    try:
        Validator(schema).validate(config)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"config: {where}: {exc.message}") from None
    check(config)
    return config


def fail(key: str, msg: str):
    """Stop with a :class:`ConfigError` naming the config ``key`` (dotted)."""
    raise ConfigError(f"config: {key}: {msg}")


def check(config: dict) -> None:
    """Cross-key checks; raises :class:`ConfigError` naming the key."""
    data = config["data"]
    if sorted(data["labels"].values()) != [0, 1]:
        fail("data.labels", f"needs one diagnosis mapped to 0 and one to 1, got {data['labels']}")
    for value, name in data["diagnoses"].items():
        if name not in data["labels"]:
            fail(f"data.diagnoses.{value}", f"maps to {name!r}, which is not one of data.labels {list(data['labels'])}")
    if config["masks"]["reference"] == "mean_cn" and "CN" not in data["labels"]:
        fail("masks.reference", f"mean_cn needs a class named CN in data.labels {list(data['labels'])} "
              "(map the table's name to CN with data.diagnoses)")
    try:
        working_grid(config)
    except ValueError as exc:
        fail("preprocess", str(exc))
    for name, cohort in data["cohorts"].items():
        key = f"data.cohorts.{name}"
        if cohort["source"] == "synthetic":
            syn = cohort["synthetic"]
            if syn["sessions_min"] > syn["sessions_max"]:
                fail(f"{key}.synthetic.sessions_min", f"{syn['sessions_min']} > sessions_max {syn['sessions_max']}")
            lo, hi = syn["age_range"]
            if lo >= hi:
                fail(f"{key}.synthetic.age_range", f"[{lo}, {hi}] is empty")
            s_lo, s_hi = syn["atrophy"]["severity"]
            if s_lo > s_hi:
                fail(f"{key}.synthetic.atrophy.severity", f"[{s_lo}, {s_hi}] is empty")
            if set(data["labels"]) != {"CN", "AD"}:
                fail("data.labels", "synthetic cohorts have diagnoses CN and AD: keep data.labels {CN: 0, AD: 1}")
        else:
            caps = cohort["caps"]
            for field in ("{participant_id}", "{session_id}"):
                if field not in caps["gm_pattern"]:
                    fail(f"{key}.caps.gm_pattern", f"lacks the field {field}")
    split = config["split"]
    folds = config["train"]["folds"]
    if folds is not None and max(folds) >= split["n_folds"]:
        fail("train.folds", f"fold {max(folds)} does not exist: split.n_folds is {split['n_folds']} (folds 0.."
              f"{split['n_folds'] - 1})")
    _check_masks(config)
    _check_saliency(config)
    _check_hpo(config)
    if split["import_dir"] and not Path(split["import_dir"]).is_dir():
        fail("split.import_dir", f"{split['import_dir']} is not a folder")


def _check_hpo(config: dict) -> None:
    hpo = config["hpo"]
    if config["train"]["architecture_from_hpo"] and not hpo["enabled"]:
        fail("train.architecture_from_hpo", "needs the search: set hpo.enabled: true")
    if hpo["fold"] >= config["split"]["n_folds"]:
        fail("hpo.fold", f"fold {hpo['fold']} does not exist: split.n_folds is {config['split']['n_folds']}")
    for key, spec in hpo["space"].items():
        if "low" in spec:
            if spec["low"] > spec["high"]:
                fail(f"hpo.space.{key}", f"low {spec['low']} > high {spec['high']}")
            if spec.get("log") and spec["low"] <= 0:
                fail(f"hpo.space.{key}", "a log scale needs low > 0")
    if hpo["pruner"] == "hyperband":
        hb = hpo["hyperband"]
        top = hb["max_resource"] or hpo["max_epochs"]
        if hb["min_resource"] > top:
            fail("hpo.hyperband.min_resource", f"{hb['min_resource']} > the maximum resource {top} (epochs)")


#: The keys the hyperparameter search owns (robustmaps.hpo): the architecture parameters of
#: robustmaps.models.PaperCNN it draws, and the training values it draws (robustmaps.training.TrainConfig);
#: with train.architecture_from_hpo they come from the search's best.yaml, not from train.*.
ARCHITECTURE_KEYS = ("n_blocks", "filters", "sub_blocks", "downsampling", "fc_layers", "dropout")
TRAINING_KEYS = ("lr", "weight_decay", "batch_size", "normalisation")
SEARCH_KEYS = ARCHITECTURE_KEYS + TRAINING_KEYS
#: the train.* keys the search replaces (the architecture as a whole)
SEARCHED_TRAIN_KEYS = ("architecture", *TRAINING_KEYS)


#: Pure resources (config/README.md, "Resources and results"): how a job computes, never what it
#: computes. Scripts read them from the config (:func:`job_resources`), never through ``params:``,
#: so that retuning them on a cluster re-runs nothing (tests/integration/test_workflow.py changes
#: each one and checks that no job is planned). Thread counts and batch sizes are not here: they
#: change CPU numerics (measured in config/README.md).
RESOURCES = {
    "train": ("device", "cache_size", "workers"),
    "hpo": ("device", "cache_size"),
    "masks": ("device",),
    "saliency": ("device",),
    "sobol": ("device",),
    "resources": ("data_threads", "checkpoint_minutes"),
}


def job_resources(config: dict, section: str, keys=None) -> dict:
    """The pure resources ``keys`` (default: all of :data:`RESOURCES`'s) of a config section,
    as a job script reads them from ``snakemake.config``."""
    keys = RESOURCES[section] if keys is None else keys
    unknown = set(keys) - set(RESOURCES[section])
    if unknown:
        raise KeyError(f"{section}: {sorted(unknown)} are not pure resources (they go through params:)")
    return {k: config[section][k] for k in keys}


def without_resources(config: dict) -> dict:
    """``config`` without its pure resources: what the provenance records (changing a resource
    re-runs nothing, not even the provenance)."""
    out = copy.deepcopy(config)
    for section, keys in RESOURCES.items():
        for key in keys:
            out.get(section, {}).pop(key, None)
    return out


def trained_models(config: dict) -> list[tuple[int, int]]:
    """Every (fold, seed) the workflow trains."""
    folds = config["train"]["folds"]
    folds = range(config["split"]["n_folds"]) if folds is None else folds
    return [(int(f), int(s)) for f in folds for s in config["train"]["seeds"]]


def listed_models(config: dict, listed) -> list[tuple[int, int]]:
    """(fold, seed) of a config list of models; every trained model when the list is null."""
    if listed is None:
        return trained_models(config)
    return [(int(m["fold"]), int(m["seed"])) for m in listed]


def saliency_models(config: dict, section: str = "saliency") -> list[tuple[int, int]]:
    """The models that get saliency maps (``saliency``) or Sobol indices (``sobol``)."""
    return listed_models(config, config[section]["models"])


def mask_models(config: dict, kind: str) -> list[tuple[int, int]]:
    """The models that get session masks (default: every model) or sweep masks (default: the
    first trained fold with the first seed, the study's "fold 0")."""
    listed = config["masks"][kind]["models"]
    if listed is not None:
        return [(int(m["fold"]), int(m["seed"])) for m in listed]
    models = trained_models(config)
    return models if kind == "session" else models[:1]


#: The saliency methods that read one layer's activations (their rules take saliency.layer); here,
#: not in robustmaps.saliency, so that the Snakefile can use it without importing torch.
CAM_METHODS = ("gradcam", "gradcampp", "layercam", "hirescam", "randomcam")


def hpo_params(config: dict) -> dict:
    """The search's settings (the hpo rules' params): the hpo section only, never train.*, so
    that changing training settings does not re-run the search; ``train`` holds what a trial does
    not search (epochs, patience, AMP; the cache size is a resource). The entries turn them into
    :class:`robustmaps.settings.Search`; their hash names the study."""
    hpo = config["hpo"]
    keys = ("n_trials", "sampler", "pruner", "hyperband", "seed", "space", "baseline", "max_parameters")
    train = {k: hpo[k] for k in ("max_epochs", "patience", "min_epochs", "amp")}
    return {**{k: hpo[k] for k in keys}, "train": train}


def saliency_params(config: dict, method: str) -> dict:
    """Exactly the saliency settings the maps of ``method`` depend on (its rule's params, so that
    a change re-runs that method only): batch size, seed, the per-session target (not actmax's:
    it explains classes), the CAM family's layer, and the method's own section. The entries turn
    them into :class:`robustmaps.settings.Saliency`."""
    section = config["saliency"]
    p = {k: section[k] for k in ("batch_size", "seed")}
    if method != "actmax":
        p["target"] = section["target"]
    if method in CAM_METHODS:
        p["layer"] = section["layer"]
    if isinstance(section.get(method), dict):
        p[method] = section[method]
    return p


def _check_masks(config: dict) -> None:
    masks = config["masks"]
    for t in masks["targets"]:
        if t not in config["data"]["labels"]:
            fail("masks.targets", f"{t!r} is not one of data.labels {list(config['data']['labels'])}")
    trained = set(trained_models(config))
    for kind in ("session", "sweep"):
        for fold, seed in mask_models(config, kind):
            if (fold, seed) not in trained:
                fail(f"masks.{kind}.models", f"fold {fold} seed {seed} is not trained (train.folds x train.seeds)")
    values = [(p["b1"], p["b2"], p["l1"], p["l2"], p.get("lr")) for p in masks["sweep"]["points"]]
    if len(set(values)) != len(values):
        fail("masks.sweep.points", "lists the same point twice")


def _check_saliency(config: dict) -> None:
    labels = list(config["data"]["labels"])
    trained = set(trained_models(config))
    sal, sob = config["saliency"], config["sobol"]
    for key, value in (("saliency.target", sal["target"]), ("saliency.group_class", sal["group_class"]),
                       ("sobol.target", sob["target"]), ("evaluation.positive_class",
                                                         config["evaluation"]["positive_class"])):
        if value not in labels + (["predicted"] if key == "saliency.target" else []):
            fail(key, f"{value!r} is not one of data.labels {labels}" + (" or predicted" if key == "saliency.target"
                                                                           else ""))
    for key, values in (("saliency.actmax.classes", sal["actmax"]["classes"]), ("sobol.images", sob["images"])):
        for v in values:
            if v not in labels:
                fail(key, f"{v!r} is not one of data.labels {labels}")
    for section in ("saliency", "sobol"):
        for fold, seed in saliency_models(config, section):
            if (fold, seed) not in trained:
                fail(f"{section}.models", f"fold {fold} seed {seed} is not trained (train.folds x train.seeds)")
    if sal["occlusion"]["stride"] > sal["occlusion"]["patch"]:
        fail("saliency.occlusion.stride", f"{sal['occlusion']['stride']} > patch {sal['occlusion']['patch']}: "
              "voxels between patches would never be occluded")
    for key, n in (("sobol.n", sob["n"]), ("sobol.convergence_min", sob["convergence_min"])):
        if n & (n - 1):
            fail(key, f"{n} is not a power of 2 (a Sobol design is balanced at powers of 2)")
    lo, hi = sob["bounds"]
    if lo >= hi:
        fail("sobol.bounds", f"[{lo}, {hi}] is empty")


def load(*paths: str | Path) -> dict:
    """Merge YAML config files (later ones win, dicts merged recursively) and validate (without the
    checks of robustmaps.jobs.common.validate)."""
    merged: dict = {}
    for p in paths:
        _merge(merged, yaml.safe_load(Path(p).read_text()) or {})
    return validate(merged)


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def gm_settings(config: dict, cohort: str) -> dict:
    """File-name pattern of the GM maps (synthetic cohorts use Clinica's own names)."""
    spec = config["data"]["cohorts"][cohort]
    if spec["source"] == "caps":
        c = spec["caps"]
        return {"pattern": c["gm_pattern"], "space": c["space"], "modulated": c["modulated"]}

    return {"pattern": CLINICA_GM_PATTERN, "space": "Ixi549Space", "modulated": "off"}


# Checks of the session tables at planning time (light: the Snakefile imports this module).
def excluded_diagnoses(sessions, labels: dict[str, int], source: str) -> list[str]:
    """One line per diagnosis of a session table that data.labels leaves out (said when the
    workflow is planned, so that a typo in a diagnosis is seen before anything runs)."""
    out = []
    for dx, n in sessions[~sessions.diagnosis.isin(list(labels))].groupby("diagnosis").size().items():
        out.append(f"{source}: {n} session(s) with diagnosis '{dx}' are excluded: not in data.labels "
                   f"({', '.join(labels)})")
    return out


def check_class_sizes(subjects: dict[str, int], n_folds: int, test_per_class: int, source: str,
                      found: list[str] | None = None, diagnoses: dict | None = None) -> None:
    """Up front (before any image is read): every class needs ``test_per_class`` test subjects
    plus at least one validation subject per fold. ``subjects``: diagnosis -> number of subjects
    (before QC, so this is a necessary condition; the split job checks again after QC)."""
    need = test_per_class + n_folds
    empty = [dx for dx, n in subjects.items() if n == 0]
    if empty and found is not None:
        raise InputError(f"{source}: no {', '.join(empty)} subject: the diagnoses found are {sorted(found)}; mapping "
                         f"used: data.labels {list(subjects)}, data.diagnoses {dict(diagnoses or {})} (case-insensitive)")
    short = {dx: n for dx, n in subjects.items() if n < need}
    if short:
        shown = ", ".join(f"{n} {dx}" for dx, n in short.items())
        raise InputError(f"{source}: {shown} subject(s): too few for split.test_per_class={test_per_class} + "
                         f"split.n_folds={n_folds} (each class needs at least {need})")


def present_maps(paths: list[str], source: str, *, missing: str, max_fraction: float, key: str) -> list[str]:
    """The GM maps of ``paths`` that exist (planning time). ``missing``: ``error`` stops at the
    first absent map; ``exclude`` leaves the absent ones out (QC excludes those sessions, saying
    why) unless more than ``max_fraction`` of them are absent: that is a wrong gm_pattern, space,
    modulation or session naming, not a few failed sessions, and the message shows one expected
    path. A dangling symlink is named as such."""
    import os

    absent = [p for p in paths if not os.path.exists(p)]
    if not absent:
        return list(paths)
    first = f"{absent[0]}: {missing_file_reason(absent[0])}"
    if missing == "error":
        raise InputError(f"{source}: {len(absent)} of {len(paths)} GM map(s) missing ({key}.missing: error), "
                         f"e.g. {first}")
    if len(absent) > max_fraction * len(paths):
        raise InputError(f"{source}: {len(absent)} of {len(paths)} GM maps ({len(absent) / len(paths):.0%}) are "
                         f"missing, more than {key}.max_missing_fraction = {max_fraction:g}: check {key}.caps_dir, "
                         f"gm_pattern, space, modulated and the session naming (ses-M00 vs ses-M000); expected for "
                         f"example {first}")
    absent_set = set(absent)
    return [p for p in paths if p not in absent_set]


def synthetic_participants(spec: dict) -> set[str]:
    """The participant ids a synthetic cohort will have (robustmaps.jobs.data.generate_cohort)."""
    syn = spec["synthetic"]
    return {f"sub-{syn['id_prefix']}{i + 1:04d}" for i in range(syn["n_cn"] + syn["n_ad"])}


def check_independent(config: dict, tables: dict) -> None:
    """Stop when a participant is in the main and another cohort (an independent cohort must be
    independent) unless data.allow_shared_participants. ``tables``: cohort -> session table of
    the caps cohorts (synthetic cohorts' ids are known from their spec)."""
    cohorts = config["data"]["cohorts"]
    if config["data"]["allow_shared_participants"] or len(cohorts) < 2:
        return

    def ids(name):
        spec = cohorts[name]
        if spec["source"] == "caps":
            return set(tables[name].participant_id)
        return synthetic_participants(spec)

    main = ids("main")
    for name in cohorts:
        if name == "main":
            continue
        shared = sorted(main & ids(name))
        if shared:
            shown = ", ".join(shared[:10]) + (f" ... ({len(shared)} in all)" if len(shared) > 10 else "")
            raise InputError(f"config: data.cohorts: {len(shared)} participant(s) are in both the main and the "
                             f"'{name}' cohort: {shown}. An independent cohort must be independent: remove them from "
                             "one table, or set data.allow_shared_participants: true")


def check_writable(folders) -> None:
    """Stop before anything runs when an existing results or log folder cannot be written (a
    read-only mount, a full quota's sibling ...): probed by creating and removing a file."""
    import os
    import tempfile

    for folder in folders:
        if not os.path.isdir(folder):
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise InputError(f"{os.path.abspath(folder)}: cannot write there ({exc.strerror}): the workflow writes "
                             "its results and logs in this folder") from None


def check_caps_inputs(config: dict) -> None:
    """Stop planning when a ``caps`` cohort's folder or session table is missing: one message
    naming the config key and the path, relative paths being read from the working directory
    (``--directory``), which the message shows. Run before the tables are read."""
    import os

    for name, spec in config["data"]["cohorts"].items():
        if spec["source"] != "caps":
            continue
        caps = spec["caps"]
        for key, path, ok, what in (("caps_dir", caps["caps_dir"], os.path.isdir, "CAPS folder"),
                                    ("tsv", caps["tsv"], os.path.isfile, "session table")):
            if not ok(path):
                where = "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"
                state = "is not a folder" if what == "CAPS folder" and os.path.exists(path) else "not found"
                raise InputError(f"{path}: {what} of cohort '{name}' {state}{where}: set "
                                 f"data.cohorts.{name}.caps.{key} in your config file to your Clinica data")
