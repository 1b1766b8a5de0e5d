# Training stage (study 2.2.2-2.2.3): one model per (fold, seed), its evaluation, the summary.

include: "train.inputs.smk"


rule train:
    """Train the CNN of one (fold, seed) on the fold's training sessions, early stopping on its
    validation baselines (robustmaps.jobs.train.train_model); with train.architecture_from_hpo the
    search's best architecture and training values (results/hpo/best.yaml) replace
    train.architecture, lr, weight_decay, batch_size and normalisation. GPU when visible."""
    input:
        unpack(hpo_best_input),
        store=paths.store(MAIN),
        index=paths.store_index(MAIN),
        train=paths.fold_table("train"),
        validation=paths.fold_table("validation_baseline"),
    output:
        model=paths.model(),
        history=f"{MODEL_DIR}/history.tsv",
    params:
        # outside the outputs: Snakemake would delete it with the outputs of a failed job
        checkpoint=lambda w: f"results/checkpoints/fold-{w.fold}/seed-{w.seed}/checkpoint.pt",
        settings=train_settings(),
        labels=config["data"]["labels"],
        threads=config["train"]["threads"],
    threads: config["train"]["threads"]
    resources:
        **gpus_for(config["train"]["device"]),
    benchmark:
        "results/benchmarks/train/fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/train/fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/train.py"


rule evaluate:
    """Predictions and metrics (bootstrap CIs) of one model on its validation set, the test set
    and every independent cohort (robustmaps.jobs.train.evaluate_model)."""
    input:
        unpack(evaluation_inputs),
        model=paths.model(),
    output:
        predictions=expand(f"{MODEL_DIR}/predictions-{{name}}.tsv", name=EVAL_SETS, allow_missing=True),
        metrics=f"{MODEL_DIR}/metrics.tsv",
    params:
        sets=EVAL_SETS,
        bootstrap=config["evaluation"]["bootstrap"],
        level=config["evaluation"]["level"],
        seed=config["evaluation"]["seed"],
        batch_size=config["evaluation"]["batch_size"],
        positive=config["evaluation"]["positive_class"],
        threads=config["train"]["threads"],
    threads: config["train"]["threads"]
    benchmark:
        "results/benchmarks/evaluate/fold-{fold}_seed-{seed}.tsv",
    log:
        "results/logs/evaluate/fold-{fold}_seed-{seed}.log",
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule training_summary:
    """Every (fold, seed) model's metrics with mean and SD per set, and the learning curves."""
    input:
        **MODEL_TABLE_INPUTS,
    output:
        summary=reported(
            paths.TRAINING_SUMMARY,
            caption="../report/captions/training_summary.rst",
            category="Training",
        ),
        curves=reported(
            "results/training/learning_curves.png",
            caption="../report/captions/learning_curves.rst",
            category="Training",
        ),
    params:
        models=MODEL_TABLE_RECORDS,
    benchmark:
        "results/benchmarks/training_summary/summary.tsv",
    log:
        "results/logs/train/summary.log",
    conda:
        ENV
    script:
        "../scripts/training_summary.py"
