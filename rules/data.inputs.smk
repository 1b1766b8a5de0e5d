# Paths, settings and input functions of the data stage (rules/data.smk): the checks of real
# cohorts' session tables and GM maps at planning time, and where each cohort's images come from.

from robustmaps.io import gm_path, read_sessions


# A caps cohort's folder and session table must exist: a missing one stops the plan naming it.
or_exit(rmconfig.check_caps_inputs, config)
# Real cohorts' session tables are checked once, up front: a malformed table stops the plan.
# Diagnoses pass through data.diagnoses (case-insensitive) to the class names of data.labels.
SESSION_TABLES = {
    name: or_exit(read_sessions, spec["caps"]["tsv"], config["data"]["labels"], config["data"]["diagnoses"],
                  spec["caps"]["blank_demographics"])
    for name, spec in config["data"]["cohorts"].items()
    if spec["source"] == "caps"
}
or_exit(rmconfig.check_independent, config, SESSION_TABLES)
# an existing results or log folder that cannot be written stops the plan (read-only mount ...)
or_exit(rmconfig.check_writable, ["results", "results/logs"])


def kept_maps(name):
    """The GM maps of a caps cohort's sessions whose diagnosis data.labels keeps, as planned."""
    spec = config["data"]["cohorts"][name]
    sessions = SESSION_TABLES[name]
    sessions = sessions[sessions.diagnosis.isin(config["data"]["labels"])]
    gm = rmconfig.gm_settings(config, name)
    return [
        str(gm_path(spec["caps"]["caps_dir"], p, s, gm["pattern"], gm["space"], gm["modulated"]))
        for p, s in zip(sessions.participant_id, sessions.session_id)
    ]


# The maps that exist: a session whose map is missing (Clinica failed on it) is left out and QC
# excludes it, saying why (caps.missing: exclude); too many missing maps stop the plan.
KEPT_MAPS = {name: kept_maps(name) for name in SESSION_TABLES}
PRESENT_MAPS = {
    name: or_exit(rmconfig.present_maps, KEPT_MAPS[name], config["data"]["cohorts"][name]["caps"]["tsv"],
                  missing=config["data"]["cohorts"][name]["caps"]["missing"],
                  max_fraction=config["data"]["cohorts"][name]["caps"]["max_missing_fraction"],
                  key=f"data.cohorts.{name}.caps")
    for name in SESSION_TABLES
}
if workflow.is_main_process:
    for name, table in SESSION_TABLES.items():
        for line in rmconfig.excluded_diagnoses(table, config["data"]["labels"], config["data"]["cohorts"][name]["caps"]["tsv"]):
            print(f"NOTE: {line}", file=sys.stderr)
        n_absent = len(KEPT_MAPS[name]) - len(PRESENT_MAPS[name])
        if n_absent:
            print(f"NOTE: cohort '{name}': {n_absent} session(s) have no GM map and are excluded "
                  f"(listed in {paths.qc_table(name)})", file=sys.stderr)
# the main cohort must have enough subjects per class for the test set and the folds
_main = config["data"]["cohorts"]["main"]
_found = None
if config["split"]["import_dir"]:
    _counts, _source = {}, None  # imported splits: their own test set and folds
elif _main["source"] == "caps":
    _t = SESSION_TABLES["main"]
    _counts = _t[_t.diagnosis.isin(config["data"]["labels"])].groupby("diagnosis").participant_id.nunique()
    _source, _found = _main["caps"]["tsv"], list(_t.diagnosis.unique())
else:
    _counts = {dx: _main["synthetic"][f"n_{dx.lower()}"] for dx in ("CN", "AD")}
    _source = "data.cohorts.main.synthetic"
if _source:
    or_exit(rmconfig.check_class_sizes, {dx: int(_counts.get(dx, 0)) for dx in config["data"]["labels"]},
            config["split"]["n_folds"], config["split"]["test_per_class"], _source, _found, config["data"]["diagnoses"])


def cohort_spec(wildcards):
    return config["data"]["cohorts"][wildcards.cohort]


def cohort_sessions(wildcards):
    return paths.sessions_table(config, wildcards.cohort)


def cohort_images(wildcards):
    """A synthetic cohort's generated CAPS folder, or every present GM map of a real cohort whose
    diagnosis is kept by data.labels (so that a changed or new map is seen by Snakemake; maps of
    excluded diagnoses are never read and need not exist; see PRESENT_MAPS for missing ones)."""
    spec = cohort_spec(wildcards)
    if spec["source"] == "synthetic":
        return paths.caps_dir(config, wildcards.cohort)
    return PRESENT_MAPS[wildcards.cohort]


def table_settings(wildcards):
    """How the qc rule reads a cohort's session table and its missing maps (caps settings;
    a synthetic cohort's own table is strict)."""
    caps = cohort_spec(wildcards).get("caps") or {}
    return {
        "diagnoses": config["data"]["diagnoses"],
        "blank_demographics": caps.get("blank_demographics", "error"),
        "missing": caps.get("missing", "error"),
    }
