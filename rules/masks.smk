# Masks stage (study 2.3): meaningful-perturbation masks of every trained model.
#   group:   one mask per (cohort, target, fold, seed) over the model's correctly classified images
#   session: one mask per session of the test set's target subjects, stacked per model (4D + index)
#   sweep:   one group mask per hyperparameter point (Tables 2-3) on the configured model(s)
# The optimiser is robustmaps.masks, the entries robustmaps.jobs.masks; the rules only choose the
# images and the settings.

include: "masks.inputs.smk"


rule mask_reference:
    """The mean CN map of a fold's training sessions: mu of equation (1) when masks.reference is
    mean_cn (robustmaps.jobs.masks.mean_reference)."""
    input:
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        train=paths.fold_table("train"),
    output:
        reference=paths.reference(),
    params:
        reference_class="CN",
        working_grid=WORKING_GRID,
    benchmark:
        "results/benchmarks/mask_reference/reference_fold-{fold}.tsv",
    log:
        "results/logs/masks/reference_fold-{fold}.log",
    conda:
        ENV
    script:
        "../scripts/mask_reference.py"


rule group_mask:
    """One group mask (2.3.3) of one model on one cohort; the second QC step's flagged images
    (robustmaps.jobs.masks.group_mask)."""
    input:
        unpack(group_mask_inputs),
    output:
        **{k: f"{GROUP_DIR}/{v}" for k, v in GROUP_FILES.items()},
    params:
        target=lambda w: w.target,
        masks=group_params,
        grids={"working": WORKING_GRID, "native": NATIVE_GRID},
        threads=MASKS["threads"],
    threads: MASKS["threads"]
    resources:
        **MASK_GPU,
    benchmark:
        "results/benchmarks/group_mask/group_{cohort}_{target}_fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/masks/group_{cohort}_{target}_fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/group_mask.py"


# A sweep point is a group mask on the main cohort with the point's penalties (group_params).
use rule group_mask as sweep_mask with:
    output:
        **{k: f"{SWEEP_DIR}/{v}" for k, v in GROUP_FILES.items()},
    benchmark:
        "results/benchmarks/sweep_mask/sweep_{point}_{target}_fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/masks/sweep_{point}_{target}_fold-{fold}_seed-{seed}.log",


if EXCLUDE:

    # The second QC step's screening pass: every group mask as it is without exclusions.
    use rule group_mask as screen_mask with:
        input:
            unpack(lambda w: group_mask_inputs(w, screen=True)),
        output:
            **{k: f"{SCREEN_DIR}/{v}" for k, v in GROUP_FILES.items()},
        benchmark:
            "results/benchmarks/screen_mask/screen_{cohort}_{target}_fold-{fold}_seed-{seed}.tsv",
        log:
            "results/logs/masks/screen_{cohort}_{target}_fold-{fold}_seed-{seed}.log",

    rule mask_exclusions:
        """Second QC step (2.3.1), cohort-wide: every session that made the loss of some model's
        screening group mask jump, excluded from every group and sweep mask of the cohort
        (robustmaps.jobs.masks.cohort_exclusions)."""
        input:
            **SCREEN_INPUTS,
        output:
            excluded=EXCLUDED_TSV,
        params:
            screens=SCREEN_RECORDS,
        benchmark:
            "results/benchmarks/mask_exclusions/exclusions_{cohort}_{target}.tsv",
        log:
            "results/logs/masks/exclusions_{cohort}_{target}.log",
        conda:
            ENV
        script:
            "../scripts/mask_exclusions.py"


rule session_masks:
    """One mask per session of the test set's target subjects (2.3.4), optimised as batches and
    stored stacked: a 4D NIfTI + an index TSV per model (robustmaps.jobs.masks.session_masks)."""
    input:
        unpack(reference_input),
        model=paths.model(),
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        test=paths.test_table("test"),
    output:
        **session_stack(
            {
                "masks": f"{SESSION_DIR}/masks.nii.gz",
                "native": f"{SESSION_DIR}/masks_native.nii.gz",
                "index": f"{SESSION_DIR}/index.tsv",
                "history": f"{SESSION_DIR}/history.tsv",
            },
            "masks",
        ),
    params:
        target=lambda w: w.target,
        masks={k: MASKS[k] for k in PENALTIES} | {k: v for k, v in MASKS["session"].items() if k != "models"},
        grids={"working": WORKING_GRID, "native": NATIVE_GRID},
        threads=MASKS["threads"],
    threads: MASKS["threads"]
    priority: 1  # the longest mask jobs: start them first
    resources:
        **MASK_GPU,
    benchmark:
        "results/benchmarks/session_masks/session_{target}_fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/masks/session_{target}_fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/session_masks.py"


rule masks_summary:
    """Every mask's summary in one table, the second QC step's flagged images, the group masks
    and the sweep's trends as figures (robustmaps.jobs.masks.summarise_masks)."""
    input:
        **MASK_INPUTS,
        background=paths.cohort_mean(MAIN),
    output:
        summary=reported(
            paths.MASKS_SUMMARY,
            caption="../report/captions/masks_summary.rst",
            category="Masks",
        ),
        flagged=reported(
            "results/masks/qc_flagged.tsv",
            caption="../report/captions/masks_flagged.rst",
            category="Cohort and QC",
            subcategory="Second QC step (masks)",
        ),
        figure=reported(
            "results/masks/group_masks.png",
            caption="../report/captions/group_masks.rst",
            category="Masks",
        ),
        sweep=reported(
            "results/masks/sweep.png",
            caption="../report/captions/mask_sweep.rst",
            category="Masks",
            subcategory="Hyperparameter sweep",
        ),
        **report_views(mask_views(), "../report/captions/mask_view.rst", "Masks", "Group mask per model"),
    params:
        entries=MASK_RECORDS,
        views={name: {**labels, "cohort": MAIN} for name, (_, labels) in mask_views().items()},
        threshold=MASKS["threshold"],
    benchmark:
        "results/benchmarks/masks_summary/summary.tsv",
    log:
        "results/logs/masks/summary.log",
    conda:
        ENV
    script:
        "../scripts/masks_summary.py"
