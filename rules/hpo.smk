# Hyperparameter search (study 2.2.2; Bertrand 2019): hpo.workers jobs share one optuna study through
# a journal file; the summary writes trials.tsv and best.yaml, which training reads when
# train.architecture_from_hpo is true (DAG: split -> hpo -> train). Entries: robustmaps.jobs.hpo; the search: robustmaps.hpo.

include: "hpo.inputs.smk"


rule hpo_worker:
    """One worker of the shared study: asks for trials until hpo.n_trials are done or running,
    trains each in a child process, reports every epoch to the pruner
    (robustmaps.jobs.hpo.hpo_worker). A GPU job."""
    input:
        **HPO_INPUTS,
    output:
        f"{HPO_DIR}/workers/worker-{{worker}}.tsv",
    params:
        settings=hpo_params(),
        journal=HPO_JOURNAL,
        workers=HPO["workers"],  # a worker releases the trials of workers that no longer exist
        threads=HPO["threads"],
    threads: HPO["threads"]
    resources:
        **gpus_for(HPO["device"]),
    benchmark:
        "results/benchmarks/hpo_worker/worker-{worker}.tsv",
    log:
        f"{HPO_DIR}/logs/worker-{{worker}}.log",
    conda:
        ENV
    script:
        "../scripts/hpo_worker.py"


rule hpo_summary:
    """Every trial of the study, the best one as training settings, optuna's history and
    importance plots, the random-search curve of Bertrand (2019) eq. 2.20 (robustmaps.jobs.hpo.hpo_summary)."""
    input:
        **HPO_INPUTS,
        workers=expand(f"{HPO_DIR}/workers/worker-{{worker}}.tsv", worker=range(HPO["workers"])),
    output:
        trials=reported(
            f"{HPO_DIR}/trials.tsv", caption="../report/captions/hpo_trials.rst", category="Hyperparameter search"
        ),
        best=f"{HPO_DIR}/best.yaml",
        history=reported(
            f"{HPO_DIR}/history.png", caption="../report/captions/hpo_history.rst", category="Hyperparameter search"
        ),
        importance=reported(
            f"{HPO_DIR}/importance.png",
            caption="../report/captions/hpo_importance.rst",
            category="Hyperparameter search",
        ),
        random_search=reported(
            f"{HPO_DIR}/random_search.png",
            caption="../report/captions/hpo_random_search.rst",
            category="Hyperparameter search",
        ),
    params:
        settings=hpo_params(),
        journal=HPO_JOURNAL,
    benchmark:
        "results/benchmarks/hpo_summary/summary.tsv",
    log:
        f"{HPO_DIR}/logs/summary.log",
    conda:
        ENV
    script:
        "../scripts/hpo_summary.py"
