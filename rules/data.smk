# Data stage: synthetic cohort (or a real CAPS folder) -> QC -> working-grid store; atlas.

include: "data.inputs.smk"


rule synthetic_cohort:
    """Generate a cohort on real anatomy in Clinica's CAPS layout (robustmaps.jobs.data.generate_cohort)."""
    output:
        caps=directory(paths.synthetic_caps()),
        sessions=paths.synthetic_sessions(),
        ground_truth=paths.ground_truth(),
        truth_sessions=f"{paths.cohort_dir()}/truth_sessions.tsv",
    params:
        spec=lambda w: cohort_spec(w)["synthetic"],
        seed=config["data"]["seed"],
        grid=NATIVE_GRID,
        atlas=config["atlas"],
    threads: config["resources"]["data_threads"]
    benchmark:
        "results/benchmarks/synthetic_cohort/{cohort}.tsv",
    log:
        "results/logs/synthetic_cohort/{cohort}.log",
    conda:
        ENV
    script:
        "../scripts/synthetic_cohort.py"


rule qc:
    """Quality check and label mapping of every session (robustmaps.jobs.data.qc_cohort)."""
    input:
        sessions=cohort_sessions,
        images=cohort_images,
    output:
        reported(
            paths.qc_table(),
            caption="../report/captions/qc.rst",
            category="Cohort and QC",
            subcategory="QC per session",
            labels={"cohort": "{cohort}"},
        ),
    params:
        caps_dir=lambda w: paths.caps_dir(config, w.cohort),
        gm=lambda w: rmconfig.gm_settings(config, w.cohort),
        grid=NATIVE_GRID,
        labels=config["data"]["labels"],
        table=table_settings,
        min_max_gm=config["qc"]["min_max_gm"],
        value_tolerance=config["qc"]["value_tolerance"],
    threads: config["resources"]["data_threads"]
    benchmark:
        "results/benchmarks/qc/{cohort}.tsv",
    log:
        "results/logs/qc/{cohort}.log",
    conda:
        ENV
    script:
        "../scripts/qc.py"


rule preprocess:
    """Resample the QC-passed sessions to the working grid: store.npy + index.tsv (robustmaps.jobs.data.build_store)."""
    input:
        qc=paths.qc_table(),
        images=cohort_images,
        atlas=paths.ATLAS,
    output:
        store=paths.store(),
        index=paths.store_index(),
        mean=paths.cohort_mean(),
    params:
        native=NATIVE_GRID,
        working=WORKING_GRID,
        dtype=config["preprocess"]["dtype"],
        baseline_column=lambda w: (cohort_spec(w).get("caps") or {}).get("baseline_column"),
    threads: config["resources"]["data_threads"]
    benchmark:
        "results/benchmarks/preprocess/{cohort}.tsv",
    log:
        "results/logs/preprocess/{cohort}.log",
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


rule atlas:
    """The atlas (AAL2 by default) on the working grid, with its label table (robustmaps.jobs.data.write_atlas)."""
    output:
        image=paths.ATLAS,
        labels=paths.ATLAS_LABELS,
    params:
        atlas=config["atlas"],
        working=WORKING_GRID,
    benchmark:
        "results/benchmarks/atlas/atlas.tsv",
    log:
        "results/logs/atlas/atlas.log",
    conda:
        ENV
    script:
        "../scripts/atlas.py"


rule cohort_table:
    """Demographics per cohort and diagnosis (the study's Table 1) with QC counts."""
    input:
        qc=[paths.qc_table(c) for c in COHORTS],
        index=[paths.store_index(c) for c in COHORTS],
    output:
        reported(
            "results/cohort/summary.tsv",
            caption="../report/captions/cohort_table.rst",
            category="Cohort and QC",
            subcategory="Cohorts (Table 1)",
        ),
    params:
        cohorts=COHORTS,
        names={c: s["name"] or c for c, s in config["data"]["cohorts"].items()},
    benchmark:
        "results/benchmarks/cohort_table/cohort_table.tsv",
    log:
        "results/logs/cohort_table/cohort_table.log",
    conda:
        ENV
    script:
        "../scripts/cohort_table.py"
