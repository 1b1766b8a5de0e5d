# Analysis stage (study 2.4 and 3): ROI vectors of every mask and map, ROI-cosine similarity
# families, their summary. The logic is robustmaps.analysis and robustmaps.similarity.


rule roi_vectors:
    """One ROI vector per mask, map and Sobol table, in one tidy table
    (robustmaps.analysis.roi_vectors_entry)."""
    input:
        atlas="results/atlas/atlas.nii.gz",
        labels="results/atlas/labels.tsv",
        files=analysis_inputs(),
    output:
        "results/analysis/roi_vectors.tsv",
    params:
        entries=analysis_entries(),
        reduction=config["roi"]["reduction"],
        group_class=SALIENCY["group_class"],
    log:
        "results/logs/analysis/roi_vectors.log",
    conda:
        ENV
    script:
        "../scripts/roi_vectors.py"


rule similarity:
    """ROI-cosine similarity of every pair of every family (folds, seeds, cohorts, sweep, intra-
    and inter-subject, methods), the families' summary and figure
    (robustmaps.analysis.similarity_entry)."""
    input:
        "results/analysis/roi_vectors.tsv",
    output:
        pairs="results/analysis/similarity/pairs.tsv",
        summary=report(
            "results/analysis/similarity/summary.tsv",
            caption="../report/captions/similarity_summary.rst",
            category="Robustness",
        ),
        figure=report(
            "results/analysis/similarity/families.png",
            caption="../report/captions/similarity_families.rst",
            category="Robustness",
        ),
    params:
        group_class=SALIENCY["group_class"],
    log:
        "results/logs/analysis/similarity.log",
    conda:
        ENV
    script:
        "../scripts/similarity.py"
