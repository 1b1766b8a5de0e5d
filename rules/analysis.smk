# Analysis stage (study 2.4 and 3): ROI vectors of every mask and map, ROI-cosine similarity
# families, their summary. The entries are robustmaps.jobs.analysis; the logic robustmaps.roi and robustmaps.similarity.

include: "analysis.inputs.smk"


rule roi_vectors:
    """One ROI vector per mask, map and Sobol table, in one tidy table
    (robustmaps.jobs.analysis.roi_vectors_entry)."""
    input:
        atlas=paths.ATLAS,
        labels=paths.ATLAS_LABELS,
        index=paths.store_index(MAIN),
        **ENTRY_INPUTS,
    output:
        paths.ROI_VECTORS,
    params:
        entries=ENTRY_RECORDS,
        masks=config["roi"]["masks"],
        maps=config["roi"]["maps"],
        group_class=SALIENCY["group_class"],
    benchmark:
        "results/benchmarks/roi_vectors/roi_vectors.tsv",
    log:
        "results/logs/analysis/roi_vectors.log",
    conda:
        ENV
    script:
        "../scripts/roi_vectors.py"


rule similarity:
    """ROI-cosine similarity of every pair of every family (folds, seeds, cohorts, sweep, intra-
    and inter-subject, methods), the families' summary and figure
    (robustmaps.jobs.analysis.similarity_entry)."""
    input:
        roi=paths.ROI_VECTORS,
        **sweep_values(),
    output:
        pairs=paths.SIMILARITY_PAIRS,
        summary=reported(
            "results/analysis/similarity/summary.tsv",
            caption="../report/captions/similarity_summary.rst",
            category="Similarity",
            subcategory="ROI-cosine families",
        ),
        figure=reported(
            "results/analysis/similarity/families.png",
            caption="../report/captions/similarity_families.rst",
            category="Similarity",
            subcategory="ROI-cosine families",
        ),
        matrices=reported(
            "results/analysis/similarity/matrices.png",
            caption="../report/captions/similarity_matrices.rst",
            category="Similarity",
            subcategory="ROI-cosine families",
        ),
        sweep_tables=reported(
            "results/analysis/similarity/sweep_tables.tsv",
            caption="../report/captions/sweep_tables.rst",
            category="Similarity",
            subcategory="Hyperparameter sweep (Tables 2-3)",
        ),
    params:
        group_class=SALIENCY["group_class"],
        n_boot=ANALYSIS["n_boot"],
        level=ANALYSIS["level"],
        seed=ANALYSIS["seed"],
    benchmark:
        "results/benchmarks/similarity/similarity.tsv",
    log:
        "results/logs/analysis/similarity.log",
    conda:
        ENV
    script:
        "../scripts/similarity.py"


rule regions:
    """Top-5 ROIs of every group mask and their frequency over folds and seeds (study 3.2.1);
    planted-ROI recovery of every mask and map on a synthetic cohort (robustmaps.jobs.analysis.regions_entry)."""
    input:
        unpack(ground_truth_input),
        roi=paths.ROI_VECTORS,
        **VIEW_MASK_INPUTS,
    output:
        top=reported(
            "results/analysis/regions/top_rois.tsv",
            caption="../report/captions/top_rois.rst",
            category="Masks",
            subcategory="Regions",
        ),
        frequency=reported(
            "results/analysis/regions/roi_frequency.tsv",
            caption="../report/captions/roi_frequency.rst",
            category="Masks",
            subcategory="Regions",
        ),
        recovery=reported(
            "results/analysis/regions/recovery.tsv",
            caption="../report/captions/recovery.rst",
            category="Similarity",
            subcategory="Planted-ROI recovery",
        ),
        frequency_figure=reported(
            "results/analysis/regions/roi_frequency.png",
            caption="../report/captions/roi_frequency.rst",
            category="Masks",
            subcategory="Regions",
        ),
        recovery_figure=reported(
            "results/analysis/regions/recovery.png",
            caption="../report/captions/recovery.rst",
            category="Similarity",
            subcategory="Planted-ROI recovery",
        ),
        views=reported(
            "results/analysis/regions/group_mask_views.png",
            caption="../report/captions/group_mask_views.rst",
            category="Masks",
            subcategory="Regions",
        ),
    params:
        group_class=SALIENCY["group_class"],
        k=ANALYSIS["top_k"],
        masks=VIEW_MASKS,
        cut_coords=ANALYSIS["cut_coords"],
    benchmark:
        "results/benchmarks/regions/regions.tsv",
    log:
        "results/logs/analysis/regions.log",
    conda:
        ENV
    script:
        "../scripts/regions.py"


rule brain_maps:
    """Brain views over the MNI152 template, the same cuts (analysis.cut_coords) for every model
    and method, voxel maps beside ROI-level maps, the planted ROIs outlined on a synthetic cohort:
    group masks, saliency group maps, Sobol ST (robustmaps.jobs.analysis.brain_maps_entry)."""
    input:
        unpack(ground_truth_input),
        roi=paths.ROI_VECTORS,
        atlas=paths.ATLAS,
        labels=paths.ATLAS_LABELS,
        **VIEW_MASK_INPUTS,
        **GROUP_MAP_INPUTS,
    output:
        masks=reported(
            "results/analysis/brain/masks.png",
            caption="../report/captions/brain_masks.rst",
            category="Masks",
            subcategory="Brain maps",
        ),
        saliency=reported(
            "results/analysis/brain/saliency.png",
            caption="../report/captions/brain_saliency.rst",
            category="Saliency and faithfulness",
            subcategory="Brain maps",
        ),
        sobol=reported(
            "results/analysis/brain/sobol.png",
            caption="../report/captions/brain_sobol.rst",
            category="Sensitivity",
            subcategory="Brain maps",
        ),
    params:
        group_class=SALIENCY["group_class"],
        masks=VIEW_MASKS,
        maps=GROUP_MAPS,
        cut_coords=ANALYSIS["cut_coords"],
    benchmark:
        "results/benchmarks/brain_maps/brain_maps.tsv",
    log:
        "results/logs/analysis/brain_maps.log",
    conda:
        ENV
    script:
        "../scripts/brain_maps.py"


rule sweep_figures:
    """The study's Figures 3-4: the group masks of one model along each one-parameter series of
    the sweep, b1 / b2 and l1 / l2 (robustmaps.jobs.analysis.sweep_figures_entry)."""
    input:
        **SWEEP_POINT_INPUTS,
    output:
        b=reported(
            "results/analysis/sweep/figure3_b1_b2.png",
            caption="../report/captions/sweep_figures.rst",
            category="Masks",
            subcategory="Hyperparameter sweep (Figures 3-4)",
        ),
        l=reported(
            "results/analysis/sweep/figure4_l1_l2.png",
            caption="../report/captions/sweep_figures.rst",
            category="Masks",
            subcategory="Hyperparameter sweep (Figures 3-4)",
        ),
    params:
        points=SWEEP_POINT_RECORDS,
        cut_coords=ANALYSIS["cut_coords"],
    benchmark:
        "results/benchmarks/sweep_figures/sweep_figures.tsv",
    log:
        "results/logs/analysis/sweep_figures.log",
    conda:
        ENV
    script:
        "../scripts/sweep_figures.py"


rule stats:
    """Fold and seed components of the variance of test balanced accuracy and of the maps' ROI
    patterns; permutation tests (over models or subjects) between similarity families (Varoquaux and Colliot 2023;
    robustmaps.jobs.analysis.stats_entry)."""
    input:
        training=paths.TRAINING_SUMMARY,
        roi=paths.ROI_VECTORS,
        pairs=paths.SIMILARITY_PAIRS,
    output:
        variance=reported(
            "results/analysis/stats/variance.tsv",
            caption="../report/captions/stats_variance.rst",
            category="Variance and tests",
        ),
        tests=reported(
            "results/analysis/stats/tests.tsv",
            caption="../report/captions/stats_tests.rst",
            category="Variance and tests",
        ),
    params:
        group_class=SALIENCY["group_class"],
        n_boot=ANALYSIS["n_boot"],
        n_perm=ANALYSIS["n_perm"],
        level=ANALYSIS["level"],
        seed=ANALYSIS["seed"],
    benchmark:
        "results/benchmarks/stats/stats.tsv",
    log:
        "results/logs/analysis/stats.log",
    conda:
        ENV
    script:
        "../scripts/stats.py"


rule prob_cnn:
    """prob_CNN (study 2.4): masks of one context on the images of another, scored by the other
    context's model, per family (robustmaps.jobs.analysis.prob_cnn_entry)."""
    input:
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        **prob_cnn_other(),
        **PROB_MODEL_INPUTS,
        **PROB_SESSION_INPUTS,
    output:
        pairs="results/analysis/prob_cnn/pairs.tsv",
        summary=reported(
            "results/analysis/prob_cnn/summary.tsv",
            caption="../report/captions/prob_cnn.rst",
            category="Similarity",
            subcategory="prob_CNN",
        ),
        matrices=reported(
            "results/analysis/prob_cnn/matrices.png",
            caption="../report/captions/prob_cnn_matrices.rst",
            category="Similarity",
            subcategory="prob_CNN",
        ),
    params:
        models=PROB_MODELS,
        sessions=PROB_SESSIONS,
        target=SALIENCY["group_class"],
        threads=MASKS["threads"],
        seed=MASKS["seed"],
    threads: MASKS["threads"]
    resources:
        **MASK_GPU,
    benchmark:
        "results/benchmarks/prob_cnn/prob_cnn.tsv",
    log:
        "results/logs/analysis/prob_cnn.log",
    conda:
        ENV
    script:
        "../scripts/prob_cnn.py"
