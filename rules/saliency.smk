# Saliency stage (seeds 001 and 002): maps of every method for every model, their faithfulness,
# activation maximisation and Sobol indices of regional GM.
#   <method>:     one rule per method (saliency.methods): per-session maps of the test set's baseline
#                 sessions, stacked (4D + index), the model's group map, and the faithfulness of
#                 every map (deletion/insertion AUC, Average Drop/Increase, coherency), scored in the
#                 same job (the model and maps are in memory; a job start costs ~10 s of imports)
#   actmax:       activation maximisation per class (its own rule: it explains classes, not sessions)
#   sobol:        Sobol indices of P(AD) to one GM factor per atlas ROI (SALib)
# The methods are robustmaps.saliency, the entries robustmaps.jobs.saliency; the rules choose the
# images and the settings.

include: "saliency.inputs.smk"


for _method in SAL_METHODS:

    rule:
        name:
            _method
        input:
            unpack(saliency_extra_inputs(_method)),
            model=paths.model(),
            store=paths.store(MAIN),
            index=paths.store_index(MAIN),
            table=paths.test_table("test_baseline"),
            atlas=paths.ATLAS,  # the stack holds the maps inside it
        output:
            **map_files(_method),
            faithfulness=f"{SAL_DIR.replace('{method}', _method)}/faithfulness.tsv",
        params:
            method=_method,
            settings=saliency_params(_method),
            faithfulness=SALIENCY["faithfulness"],
            group_class=SALIENCY["group_class"],
            grids={"working": WORKING_GRID, "native": NATIVE_GRID},
            threads=SALIENCY["threads"],
        threads: SALIENCY["threads"]
        resources:
            **SAL_GPU,
        benchmark:
            f"results/benchmarks/{_method}/{_method}_fold-{{fold}}_seed-{{seed}}.tsv",
        log:
            f"results/logs/saliency/{_method}_fold-{{fold}}_seed-{{seed}}.log",
        conda:
            ENV
        script:
            "../scripts/saliency_maps.py"


rule actmax:
    """Activation maximisation (Miao and Matveev 2025, eq. 4) of every class in saliency.actmax.classes
    (robustmaps.jobs.saliency.actmax_maps)."""
    input:
        model=paths.model(),
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        table=paths.test_table("test_baseline"),
    output:
        **map_files("actmax"),
    params:
        settings=saliency_params("actmax"),
        group_class=SALIENCY["group_class"],
        grids={"working": WORKING_GRID, "native": NATIVE_GRID},
        threads=SALIENCY["threads"],
    threads: SALIENCY["threads"]
    resources:
        **SAL_GPU,
    benchmark:
        "results/benchmarks/actmax/actmax_fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/saliency/actmax_fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/actmax.py"


rule saliency_summary:
    """Tables 5.2-5.3 of Weber (2023) (one row per method, mean and SD over models), every map's
    metrics, and figures (robustmaps.jobs.saliency.summarise_saliency)."""
    input:
        **FAITHFULNESS_INPUTS,
        **GROUP_MAP_INPUTS,
        background=paths.cohort_mean(MAIN),
    output:
        per_map="results/saliency/faithfulness.tsv",
        table=reported(
            "results/saliency/faithfulness_summary.tsv",
            caption="../report/captions/faithfulness_summary.rst",
            category="Saliency and faithfulness",
        ),
        figure=reported(
            "results/saliency/faithfulness.png",
            caption="../report/captions/faithfulness.rst",
            category="Saliency and faithfulness",
        ),
        maps_figure=reported(
            "results/saliency/group_maps.png",
            caption="../report/captions/saliency_group_maps.rst",
            category="Saliency and faithfulness",
        ),
        **report_views(
            saliency_views(), "../report/captions/saliency_view.rst", "Saliency and faithfulness", "Group map per model"
        ),
    params:
        entries=FAITHFULNESS_RECORDS,
        group_maps=GROUP_MAPS,
        views={name: labels for name, (_, labels) in saliency_views().items()},
        comparison=SALIENCY["comparison"],
    benchmark:
        "results/benchmarks/saliency_summary/summary.tsv",
    log:
        "results/logs/saliency/summary.log",
    conda:
        ENV
    script:
        "../scripts/saliency_summary.py"


rule sobol:
    """Sobol indices of P(target) to one multiplicative GM factor per atlas ROI, with the
    convergence over N (Miao and Matveev 2025; robustmaps.jobs.saliency.sobol_entry)."""
    input:
        model=paths.model(),
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        table=paths.test_table("test_baseline"),
        atlas=paths.ATLAS,
        labels=paths.ATLAS_LABELS,
    output:
        indices=f"{SOBOL_DIR}/indices.tsv",
        convergence=f"{SOBOL_DIR}/convergence.tsv",
        second_order=f"{SOBOL_DIR}/second_order.tsv",
    params:
        sobol={k: v for k, v in SOBOL.items() if k not in ("models", *rmconfig.RESOURCES["sobol"], "threads")},
        threads=SOBOL["threads"],
    threads: SOBOL["threads"]
    resources:
        **SOBOL_GPU,
    benchmark:
        "results/benchmarks/sobol/fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/sobol/fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/sobol.py"


rule sobol_summary:
    """Every model's Sobol indices in one tidy table and the convergence figure
    (robustmaps.jobs.saliency.summarise_sobol)."""
    input:
        **SOBOL_INPUTS,
    output:
        indices=reported(
            "results/sobol/indices.tsv",
            caption="../report/captions/sobol_indices.rst",
            category="Sensitivity",
        ),
        convergence="results/sobol/convergence.tsv",
        figure=reported(
            "results/sobol/convergence.png",
            caption="../report/captions/sobol_convergence.rst",
            category="Sensitivity",
        ),
    params:
        entries=SOBOL_RECORDS,
    benchmark:
        "results/benchmarks/sobol_summary/summary.tsv",
    log:
        "results/logs/sobol/summary.log",
    conda:
        ENV
    script:
        "../scripts/sobol_summary.py"
