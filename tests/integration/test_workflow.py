"""The workflow itself, run by Snakemake on the smoke config (one shared run) and on a real-CAPS
cohort built from it; planning of the demo and paper configs; lint; rerun triggers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SMOKE, install_site_profile, job_blocks, profile_runtime, run_snakemake, snakemake_as_user
from robustmaps import acceptance
from robustmaps import config as rmconfig
from robustmaps.grid import working_grid
from robustmaps.preprocess import open_store
from robustmaps.runner import visible_gpus
from robustmaps.splits import verify

pytestmark = pytest.mark.workflow
# a local run asks network rules for a GPU only where one is visible (robustmaps.runner.gpu_request)
LOCAL_GPU = 1 if visible_gpus() else 0


def job_counts(output: str) -> dict[str, int]:
    """{rule: count} from the 'Job stats' table of a dry run."""
    block = output.split("Job stats:")[1]
    counts = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def overlay(tmp_path: Path, data: dict) -> str:
    path = tmp_path / f"overlay-{len(list(tmp_path.glob('overlay-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def smoke_config():
    return rmconfig.load(SMOKE)


def test_smoke_products_meet_the_acceptance_checks(smoke_run, smoke_config):
    results = smoke_run / "results"
    assert acceptance.check_qc(results, smoke_config) == []
    assert acceptance.check_splits(results, smoke_config) == []
    assert acceptance.check_planted_signal(results, {**smoke_config, "data": {
        **smoke_config["data"], "cohorts": {"main": smoke_config["data"]["cohorts"]["main"]}}}) == []


def test_store_atlas_and_index_share_the_working_grid(smoke_run, smoke_config):
    results = smoke_run / "results"
    grid = working_grid(smoke_config)
    atlas = nib.load(results / "atlas" / "atlas.nii.gz")
    assert grid.matches(atlas.shape, atlas.affine)
    labels = pd.read_csv(results / "atlas" / "labels.tsv", sep="\t")
    assert len(labels) == 120 and labels.n_voxels.sum() == (np.asarray(atlas.dataobj) > 0).sum()
    for cohort in ("main", "independent"):
        store, index = open_store(results / "cohort" / cohort / "store.npy", results / "cohort" / cohort / "index.tsv")
        assert store.shape[1:] == grid.shape and store.dtype == np.float16
        qc = pd.read_csv(results / "cohort" / cohort / "qc.tsv", sep="\t")
        assert len(index) == (qc.status == "pass").sum()
        assert index.groupby("participant_id").baseline.sum().eq(1).all()
        mean = nib.load(results / "cohort" / cohort / "mean.nii.gz")
        np.testing.assert_allclose(np.asarray(mean.dataobj), store[range(len(store))].astype(np.float64).mean(0),
                                   atol=2e-3)
    table = pd.read_csv(results / "cohort" / "summary.tsv", sep="\t")
    for cohort in ("main", "independent"):
        qc = pd.read_csv(results / "cohort" / cohort / "qc.tsv", sep="\t")
        assert table[table.cohort == cohort].qc_failed_sessions.sum() == (qc.status == "fail").sum()
    indep = pd.read_csv(results / "splits" / "independent" / "test_baseline.tsv", sep="\t")
    assert set(indep.cohort) == {"independent"}


# the default target and the provenance, which is re-written whenever anything above it re-runs
FINAL = {"all": 1, "provenance": 1}
TRAINING = {"train": 4, "evaluate": 4, "training_summary": 1}  # 2 folds x 2 seeds
# 2 cohorts x 2 targets x 4 models; 2 sweep points x 2 targets; session masks of one model x 2 targets
MASKS = {"group_mask": 16, "sweep_mask": 4, "session_masks": 2, "masks_summary": 1,
         "sweep_figures": 1}  # the study's Figures 3-4 draw the sweep masks
REFERENCE = {"mask_reference": 2}  # the mean CN map of each fold
# every per-session method on one model, its faithfulness, activation maximisation, Sobol on one model
METHODS = ["gradcam", "gradcampp", "layercam", "hirescam", "randomcam", "vanilla", "smoothgrad", "occlusion", "lots"]
SALIENCY = {**{m: 1 for m in METHODS}, "actmax": 1, "saliency_summary": 1, "sobol": 1, "sobol_summary": 1}
ANALYSIS = {"roi_vectors": 1, "similarity": 1, "regions": 1, "stats": 1, "brain_maps": 1}  # everything above feeds them
PROB = {"prob_cnn": 1}  # masks and models feed it
HPO = {"hpo_worker": 2, "hpo_summary": 1}  # the search runs on split 0 (training does not use it here)
JUMP_FACTOR = 1.05  # low enough that the smoke run's probability masks flag some images (the default 10 flags none)


def test_rerun_does_nothing_and_one_value_reruns_only_its_descendants(smoke_run, tmp_path):
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE)).stdout
    assert "Nothing to be done" in out
    seed = overlay(tmp_path, {"split": {"seed": 5}})
    counts = job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), seed).stdout)
    assert counts == {**FINAL, "split": 1, **TRAINING, **MASKS, **REFERENCE, **SALIENCY, **ANALYSIS, **PROB, **HPO}
    qc = overlay(tmp_path, {"qc": {"min_max_gm": 0.9}})
    counts = job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), qc).stdout)
    assert counts == {**FINAL, "cohort_table": 1, "preprocess": 2, "qc": 2, "split": 1, "test_cohort": 1, **TRAINING,
                      **MASKS, **REFERENCE, **SALIENCY, **ANALYSIS, **PROB, **HPO}
    # the independent cohort is only evaluated on: models are not retrained
    indep = overlay(tmp_path, {"data": {"cohorts": {"independent": {"synthetic": {"n_cn": 6}}}}})
    counts = job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), indep).stdout)
    assert counts == {**FINAL, "cohort_table": 1, "preprocess": 1, "qc": 1, "synthetic_cohort": 1, "test_cohort": 1,
                      "evaluate": 4, "training_summary": 1, "group_mask": 8, "masks_summary": 1, **ANALYSIS, **PROB}
    lr = overlay(tmp_path, {"train": {"lr": 5e-4}})
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), lr).stdout
    assert job_counts(out) == {**FINAL, **TRAINING, **MASKS, **SALIENCY, **ANALYSIS, **PROB}
    # (the workflow profile's groups nest train in a "model" group job: job_blocks reads indented blocks)
    train_jobs = [j for j in job_blocks(out) if j["rule"] == "train"]
    assert len(train_jobs) == 4 and all(j["gpu"] == LOCAL_GPU for j in train_jobs)
    boot = overlay(tmp_path, {"evaluation": {"bootstrap": 300}})
    assert job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), boot).stdout) == {
        **FINAL, "evaluate": 4, "training_summary": 1, "stats": 1}  # stats reads the training summary
    one_seed = overlay(tmp_path, {"train": {"seeds": [0]}})  # a subset of the models: only the summary
    assert job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), one_seed).stdout) == {
        **FINAL, "training_summary": 1, "masks_summary": 1, **ANALYSIS, **PROB}


def test_pure_resources_rerun_nothing_and_thread_counts_rerun_their_rules(smoke_run, smoke_config, tmp_path):
    """Every pure resource of robustmaps.config.RESOURCES (devices, caches, loader workers, data
    threads, checkpoint interval) changed at once: nothing is planned, so retuning them on a
    cluster retrains nothing. A thread count changes CPU numerics: it re-runs its rules."""
    changed = {}
    for section, keys in rmconfig.RESOURCES.items():
        for key in keys:
            old = smoke_config[section][key]
            new = ("cpu" if old == "auto" else "auto") if key == "device" else old + 3
            changed.setdefault(section, {})[key] = new
    assert set(changed["train"]) == {"device", "cache_size", "workers"}
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), overlay(tmp_path, changed)).stdout
    assert "Nothing to be done" in out, out[-3000:]
    threads = overlay(tmp_path, {"saliency": {"threads": smoke_config["saliency"]["threads"] + 1}})
    counts = job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), threads).stdout)
    assert all(counts[m] == len(rmconfig.saliency_models(smoke_config)) for m in METHODS) and "train" not in counts


def test_hpo_trials_best_and_training_from_it(smoke_run, tmp_path):
    import torch
    import yaml as _yaml

    from robustmaps.hpo import load_best

    results = smoke_run / "results"
    trials = pd.read_csv(results / "hpo" / "trials.tsv", sep="\t")
    assert len(trials) == 4 and trials.number.is_unique and set(trials.worker) <= {0, 1}
    # each trial ran in exactly one worker (on 2 local cores a worker may start after the other
    # has finished the study: it then runs none)
    ran = pd.concat([pd.read_csv(results / "hpo" / "workers" / f"worker-{w}.tsv", sep="\t") for w in (0, 1)])
    assert sorted(ran.number) == sorted(trials.number)
    assert set(trials.state) <= {"COMPLETE", "PRUNED", "FAIL"} and (trials.state == "COMPLETE").any()
    assert trials.set_index("number").loc[0, "params_n_blocks"] == 3  # trial 0 is hpo.baseline
    # 6 blocks do not fit the 30 x 36 x 30 working grid: recorded as failed, never trained
    six = trials[trials.params_n_blocks == 6]
    assert (six.state == "FAIL").all() and six.error.astype(str).str.startswith("infeasible").all()
    best = _yaml.safe_load((results / "hpo" / "best.yaml").read_text())
    done = trials[trials.state == "COMPLETE"].sort_values(["value", "number"], ascending=[False, True])
    assert best["trial"] == done.number.iloc[0]
    assert best["validation_balanced_accuracy"] == pytest.approx(done.value.iloc[0])
    assert best["settings"]["lr"] == pytest.approx(done.params_lr.iloc[0])
    log = "".join((results / "hpo" / "logs" / f"worker-{w}.log").read_text() for w in (0, 1))
    assert re.search(r"trial \d+ epoch \d+: train loss [\d.]+ \| validation loss [\d.]+ bacc [\d.]+", log)
    # changing training settings never re-runs the search; a search setting re-runs only it
    lr = overlay(tmp_path, {"train": {"lr": 5e-4}})
    assert "hpo_worker" not in job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), lr).stdout)
    more = overlay(tmp_path, {"hpo": {"n_trials": 5}})
    assert job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), more).stdout) == {
        **FINAL, **HPO}
    # training consumes best.yaml (in a copy: the shared run stays as it is)
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("saliency", "sobol", "masks", "analysis"))
    use = overlay(tmp_path, {"train": {"architecture_from_hpo": True}})
    target = "results/models/fold-0/seed-0/model.pt"  # before --configfile, which takes several files
    plan = job_counts(run_snakemake(copy, "-n", target, "--configfile", str(SMOKE), use).stdout)
    assert plan == {"train": 1}
    run_snakemake(copy, "--cores", "2", target, "--configfile", str(SMOKE), use)
    meta = torch.load(copy / "results" / "models" / "fold-0" / "seed-0" / "model.pt", weights_only=True)
    assert meta["architecture"] == load_best(results / "hpo" / "best.yaml")["architecture"]


def test_mask_settings_rerun_exactly_the_masks_that_use_them(smoke_run, tmp_path):
    def counts(data):
        return job_counts(run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), overlay(tmp_path, data)).stdout)

    # the sweep points set their own penalties: a new default l1 re-runs group and session masks only
    assert counts({"masks": {"l1": 2e-4}}) == {**FINAL, "group_mask": 16, "session_masks": 2, "masks_summary": 1,
                                               **ANALYSIS, **PROB}
    assert counts({"masks": {"session": {"max_epochs": 25}}}) == {**FINAL, "session_masks": 2, "masks_summary": 1,
                                                                  **ANALYSIS, **PROB}
    assert counts({"masks": {"independent": {"patience": 4}}}) == {**FINAL, "group_mask": 8, "masks_summary": 1,
                                                                   **ANALYSIS, **PROB}
    assert counts({"masks": {"sweep": {"batch_size": 1}}}) == {**FINAL, "sweep_mask": 4, "masks_summary": 1,
                                                               "sweep_figures": 1, **ANALYSIS}
    point = {"b1": 0.1, "b2": 1, "l1": 1e-3, "l2": 1e-3}
    smoke_points = rmconfig.load(SMOKE)["masks"]["sweep"]["points"]
    assert counts({"masks": {"sweep": {"points": smoke_points + [point]}}}) == {
        **FINAL, "sweep_mask": 2, "masks_summary": 1, "sweep_figures": 1, **ANALYSIS}
    # mu = 1 instead of the mean CN map: every mask, no reference map, and every per-session
    # saliency method, whose faithfulness perturbs as the masks do (saliency.faithfulness.baseline)
    assert counts({"masks": {"reference": "one"}}) == {**FINAL, **MASKS, **ANALYSIS, **PROB,
                                                       **{m: 1 for m in METHODS}, "saliency_summary": 1}
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), overlay(tmp_path, {"masks": {"l1": 3e-4}})).stdout
    jobs = [b for b in re.split(r"\n\[[^\n]*\d\]\n", out) if b.startswith(("rule group_mask:", "rule session_masks:"))]
    assert len(jobs) == 18 and all(f"gpu={LOCAL_GPU}" in b for b in jobs)


def test_second_qc_exclusion_is_cohort_wide(smoke_run, smoke_config, tmp_path):
    """masks.group.jump_action: exclude (study 2.3.1) plans a screening pass of every group mask,
    one exclusion list per cohort and target, then every group mask reading its screening pass and
    its cohort's list, and every sweep mask reading the main cohort's list; models are not
    retrained. Run for real on a copy, for the main cohort's AD masks: the screening masks are
    the report-mode masks bit for bit, the list is the union of their flags, and each final mask
    either went without the excluded sessions or, having none of them, is its screening mask."""
    exclude = overlay(tmp_path, {"masks": {"group": {"jump_action": "exclude", "jump_factor": JUMP_FACTOR}}})
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), exclude).stdout
    counts = job_counts(out)
    assert counts["screen_mask"] == counts["group_mask"] == 16 and counts["mask_exclusions"] == 4
    assert counts["sweep_mask"] == 4 and "train" not in counts
    for block in re.split(r"\n\[[^\n]*\d\]\n", out):
        inputs = next((line for line in block.splitlines() if line.strip().startswith("input:")), "")
        if block.startswith("rule group_mask:"):
            assert "results/masks/screen/" in inputs and re.search(r"results/masks/qc/\w+/\w+/excluded.tsv", inputs)
        elif block.startswith("rule sweep_mask:"):
            assert "results/masks/qc/main/" in inputs and "results/masks/screen/" not in inputs
    # a real run on a copy: main cohort, AD
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("saliency", "sobol", "analysis", "report*"))
    models = rmconfig.trained_models(smoke_config)
    targets = [f"results/masks/group/main/AD/fold-{f}/seed-{s}/summary.tsv" for f, s in models]
    run_snakemake(copy, "--cores", "2", *targets, "--configfile", str(SMOKE), exclude)
    masks = copy / "results" / "masks"
    flagged = set()
    for f, s in models:
        screen = masks / "screen" / "main" / "AD" / f"fold-{f}" / f"seed-{s}"
        report_mode = smoke_run / "results" / "masks" / "group" / "main" / "AD" / f"fold-{f}" / f"seed-{s}"
        assert (screen / "mask.nii.gz").read_bytes() == (report_mode / "mask.nii.gz").read_bytes()
        table = pd.read_csv(screen / "flagged.tsv", sep="\t")
        flagged |= set(zip(table.participant_id, table.session_id))
    excluded = pd.read_csv(masks / "qc" / "main" / "AD" / "excluded.tsv", sep="\t")
    assert set(zip(excluded.participant_id, excluded.session_id)) == flagged and flagged, "nothing flagged"
    removed = others = 0
    for f, s in models:
        screen, final = masks / "screen" / "main" / "AD" / f"fold-{f}" / f"seed-{s}", \
            masks / "group" / "main" / "AD" / f"fold-{f}" / f"seed-{s}"
        before, after = (pd.read_csv(d / "summary.tsv", sep="\t").iloc[0] for d in (screen, final))
        if after.excluded_images == 0:
            assert all((final / n).read_bytes() == (screen / n).read_bytes() for n in ("mask.nii.gz", "summary.tsv"))
        else:
            # the training images include the validation images (include_validation): each removed once
            assert after.n_images == before.n_images - after.excluded_images
            assert after.n_validation <= before.n_validation
            assert (final / "mask.nii.gz").read_bytes() != (screen / "mask.nii.gz").read_bytes()
            log = (copy / "results" / "logs" / "masks" / f"group_main_AD_fold-{f}_seed-{s}.log").read_text()
            assert f"{after.excluded_images} of this model's images made some model's loss jump" in log
        own = pd.read_csv(screen / "flagged.tsv", sep="\t")
        others += after.excluded_images - len(own)
        removed += after.excluded_images
    assert removed >= len(flagged)  # every flagged session left at least the mask that flagged it
    assert others > 0  # and some left masks of models that never flagged them: the exclusion is cohort-wide


def test_saliency_settings_rerun_exactly_the_methods_that_use_them(smoke_run, tmp_path):
    def plan(data):
        return run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), overlay(tmp_path, data)).stdout

    out = plan({"saliency": {"lots": {"iterations": 40}}})
    assert job_counts(out) == {**FINAL, "lots": 1, "saliency_summary": 1, **ANALYSIS}
    jobs = [b for b in re.split(r"\n\[[^\n]*\d\]\n", out) if b.startswith("rule lots:")]
    assert len(jobs) == 1 and all(f"gpu={LOCAL_GPU}" in b for b in jobs)
    assert job_counts(plan({"saliency": {"faithfulness": {"steps": 10}}})) == {
        **FINAL, **{m: 1 for m in METHODS}, "saliency_summary": 1, **ANALYSIS}
    # the CAM layer is shared by the five CAMs only
    cams = ["gradcam", "gradcampp", "layercam", "hirescam", "randomcam"]
    assert job_counts(plan({"saliency": {"layer": "net.features.5"}})) == {
        **FINAL, **{m: 1 for m in cams}, "saliency_summary": 1, **ANALYSIS}
    assert job_counts(plan({"saliency": {"actmax": {"iterations": 12}}})) == {**FINAL, "actmax": 1,
                                                                               "saliency_summary": 1, **ANALYSIS}
    assert job_counts(plan({"sobol": {"n": 32}})) == {**FINAL, "sobol": 1, "sobol_summary": 1, **ANALYSIS}
    assert job_counts(plan({"saliency": {"methods": ["gradcam", "randomcam"]}})) == {
        **FINAL, "saliency_summary": 1, **ANALYSIS}
    assert job_counts(plan({"roi": {"maps": {"reduction": "sum"}}})) == {**FINAL, **ANALYSIS}


def test_smoke_saliency_maps_sobol_and_faithfulness_tables(smoke_run, smoke_config):
    results = smoke_run / "results"
    problems = acceptance.check_saliency(results, smoke_config)
    assert [p for p in problems if "Random-CAM" not in p] == []
    table = pd.read_csv(results / "saliency" / "faithfulness_summary.tsv", sep="\t").set_index("method")
    assert sorted(table.index) == sorted(METHODS) and (table.n_models == 1).all()
    assert pd.isna(table.loc["randomcam", "beats_random"])
    per_map = pd.read_csv(results / "saliency" / "faithfulness.tsv", sep="\t")
    test = pd.read_csv(results / "splits" / "test_baseline.tsv", sep="\t")
    assert per_map.groupby("method").size().eq(len(test)).all()
    # the per-method table is the mean of the per-map table (one model)
    np.testing.assert_allclose(table.loc[per_map.groupby("method").deletion_auc.mean().index, "deletion_auc"],
                               per_map.groupby("method").deletion_auc.mean(), rtol=1e-6)
    # CAMs run on the last block's activation, recorded in the index
    idx = pd.read_csv(results / "saliency" / "gradcam" / "fold-0" / "seed-0" / "index.tsv", sep="\t")
    assert idx.layer.nunique() == 1 and idx.layer[0].startswith("net.features.")
    assert len(idx) == len(test) and (idx.runtime_ms > 0).all()
    # Sobol: one row per ROI present on the grid, ST and S1 with intervals, convergence up to N
    ind = pd.read_csv(results / "sobol" / "indices.tsv", sep="\t")
    labels = pd.read_csv(results / "atlas" / "labels.tsv", sep="\t")
    assert len(ind) == (labels.n_voxels > 0).sum() and np.isfinite(ind.ST).all() and (ind.ST_conf >= 0).all()
    conv = pd.read_csv(results / "sobol" / "convergence.tsv", sep="\t")
    assert sorted(set(conv.n)) == [4, 8, 16]


def test_smoke_roi_vectors_and_similarity_families(smoke_run, smoke_config):
    results = smoke_run / "results"
    table = pd.read_csv(results / "analysis" / "roi_vectors.tsv", sep="\t", dtype={"point": str})
    labels = pd.read_csv(results / "atlas" / "labels.tsv", sep="\t")
    assert list(table.columns[-len(labels):]) == list(labels.name)
    test = pd.read_csv(results / "splits" / "test_baseline.tsv", sep="\t")
    sessions = sum(len(pd.read_csv(p, sep="\t")) for p in (results / "masks" / "session").glob("*/*/*/index.tsv"))
    counts = table.kind.value_counts().to_dict()
    assert counts == {"group": 16, "sweep": 4, "session": sessions, "saliency": 10,
                      "saliency_session": 9 * len(test), "sobol": 1}
    # a group mask's vector is the ROI sum of its 1 - m (roi.masks.reduction: the study's definition)
    from robustmaps.roi import roi_vectors
    from robustmaps.similarity import FAMILIES

    atlas = np.asarray(nib.load(results / "atlas" / "atlas.nii.gz").dataobj)
    m = np.asarray(nib.load(results / "masks" / "group" / "main" / "AD" / "fold-0" / "seed-0" / "mask.nii.gz").dataobj)
    row = table[(table.kind == "group") & (table.cohort == "main") & (table.target == "AD") & (table.fold == 0)
                & (table.seed == 0)]
    np.testing.assert_allclose(row[list(labels.name)].to_numpy()[0],
                               roi_vectors((1 - m)[..., None], atlas, labels["index"].tolist(), "sum")[0],
                               rtol=1e-5, atol=1e-6)
    pairs = pd.read_csv(results / "analysis" / "similarity" / "pairs.tsv", sep="\t")
    summary = pd.read_csv(results / "analysis" / "similarity" / "summary.tsv", sep="\t")
    # 2 targets x 2 seeds fold pairs, as many seed pairs; 2 targets x 4 models cohort pairs
    n = summary.set_index("family").n_pairs
    assert (n["folds"], n["seeds"], n["cohorts"]) == (4, 4, 8)
    assert list(summary.family) == [f for f in FAMILIES if f in set(pairs.family)]
    assert ((pairs.cosine >= -1e-9) & (pairs.cosine <= 1 + 1e-9)).all()
    # saliency group maps enter relative to their brain mean (roi.maps.normalisation: above_mean)
    from robustmaps.roi import above_mean, indicator

    gmap = np.asarray(nib.load(results / "saliency" / "vanilla" / "fold-0" / "seed-0" / "group.nii.gz").dataobj)
    row = table[(table.kind == "saliency") & (table.method == "vanilla")]
    matrix = indicator(atlas, labels["index"].tolist())
    expected = above_mean(roi_vectors(gmap[..., None].astype(np.float32), atlas, labels["index"].tolist(),
                                      matrix=matrix), matrix)
    np.testing.assert_allclose(row[list(labels.name)].to_numpy()[0], expected[0], atol=1e-6)
    assert (row[list(labels.name)].to_numpy() == 0).any()  # ROIs below the brain mean
    # every family's CI brackets its mean; units are models for folds
    s = summary.set_index("family")
    assert ((s.ci_low <= s["mean"] + 1e-9) & (s["mean"] <= s.ci_high + 1e-9)).all() and s.loc["folds", "n_units"] == 4
    # statistics: the fold and seed components add up for every quantity; the compare command on
    # one folder twice finds no difference
    var = pd.read_csv(results / "analysis" / "stats" / "variance.tsv", sep="\t")
    quantities = set(var.quantity)
    assert {"test balanced accuracy", "ROI pattern: AD group masks"} <= quantities  # saliency on 1 model: none
    for _, v in var.groupby("quantity"):
        est = v.set_index("component").estimate
        assert est["total"] == pytest.approx(est["fold"] + est["seed"]) and est["fold"] >= 0 and est["seed"] >= 0
    tests = pd.read_csv(results / "analysis" / "stats" / "tests.tsv", sep="\t")
    assert len(tests) == 4 and set(tests.unit) == {"model", "model vs subject", "subject (paired)"}
    done = tests[tests.note.isna()]
    assert len(done) >= 3 and done.p_value.between(0, 1, inclusive="right").all()
    # one smoke subject has two sessions: the paired test has too few units and says so
    assert tests.note.dropna().str.startswith("not tested").all()
    from robustmaps.compare import compare

    same = compare(results, results).iloc[0]
    assert same.mean_difference == 0 and same.n_models == 4
    # prob_CNN: every ordered pair of the 4 models' AD group masks, and between cohorts both ways
    prob = pd.read_csv(results / "analysis" / "prob_cnn" / "pairs.tsv", sep="\t")
    counts = prob.family.value_counts()
    assert counts["own"] == 4 and counts["folds"] == 4 and counts["seeds"] == 4
    assert counts["cohorts_other_on_main"] == 4 and counts["cohorts_main_on_other"] == 4
    other = prob[prob.family == "cohorts_main_on_other"]
    assert (other.n_images > 0).all()  # the main masks were scored on independent images
    assert prob.probability.between(0, 1).all()


def test_smoke_masks_are_on_the_grids_and_their_tables_agree(smoke_run, smoke_config):
    from robustmaps.grid import native_grid

    results = smoke_run / "results"
    summary = pd.read_csv(results / "masks" / "summary.tsv", sep="\t", dtype={"participant_id": str})
    assert summary.kind.value_counts().to_dict()["group"] == 16 and (summary.kind == "sweep").sum() == 4
    group = summary[summary.kind == "group"]
    assert set(zip(group.cohort, group.target)) == {(c, t) for c in ("main", "independent") for t in ("AD", "CN")}
    worked = group[group.n_images > 0]
    # 6 epochs on weak smoke models: no mask raises the score, most lower it
    assert len(worked) >= 12 and (worked.score_after <= worked.score_before + 1e-6).all()
    assert (worked.score_after < worked.score_before - 1e-4).sum() >= len(worked) // 2
    d = results / "masks" / "group" / "main" / "AD" / "fold-1" / "seed-0"
    mask, native = nib.load(d / "mask.nii.gz"), nib.load(d / "mask_native.nii.gz")
    assert working_grid(smoke_config).matches(mask.shape, mask.affine)
    assert native_grid(smoke_config).matches(native.shape, native.affine)
    row = group[(group.cohort == "main") & (group.target == "AD") & (group.fold == 1) & (group.seed == 0)].iloc[0]
    assert row.coverage == pytest.approx((np.asarray(mask.dataobj) < 0.95).mean())
    hist = pd.read_csv(d / "history.tsv", sep="\t")
    log = (results / "logs" / "masks" / "group_main_AD_fold-1_seed-0.log").read_text()
    assert log.count(" | validation loss ") == len(hist) - 1 == row.epochs
    # session masks: every session of the test set's AD (CN) subjects, one volume each
    test = pd.read_csv(results / "splits" / "test.tsv", sep="\t")
    for target in ("AD", "CN"):
        s = results / "masks" / "session" / target / "fold-0" / "seed-0"
        index = pd.read_csv(s / "index.tsv", sep="\t")
        assert index.session_id.tolist() == test[test.diagnosis == target].session_id.tolist()
        assert nib.load(s / "masks.nii.gz").shape == (*working_grid(smoke_config).shape, len(index))
        assert len(summary[(summary.kind == "session") & (summary.target == target)]) == len(index)
    # the mean CN map of the fold was the reference: it is on the working grid
    ref = nib.load(results / "masks" / "reference" / "fold-0" / "mean_cn.nii.gz")
    assert working_grid(smoke_config).matches(ref.shape, ref.affine) and 0 < np.asarray(ref.dataobj).max() <= 1
    flagged = pd.read_csv(results / "masks" / "qc_flagged.tsv", sep="\t")
    assert list(flagged.columns[:4]) == ["cohort", "target", "fold", "seed"]


def test_smoke_models_learned_and_their_tables_agree(smoke_run, smoke_config):
    results = smoke_run / "results"
    summary = pd.read_csv(results / "training" / "summary.tsv", sep="\t", dtype={"fold": str, "seed": str})
    models = summary[~summary.fold.isin(["mean", "sd"])]
    assert sorted(set(zip(models.fold, models.seed))) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert set(summary.set) == {"validation", "test", "independent"}
    # tiny sets (6 validation, 2 + 2 test subjects): the models learned something on average
    assert summary[(summary.fold == "mean") & (summary.set == "validation")].balanced_accuracy.iloc[0] > 0.6
    for f, s in (("0", "0"), ("1", "1")):
        d = results / "models" / f"fold-{f}" / f"seed-{s}"
        pred = pd.read_csv(d / "predictions-test.tsv", sep="\t")
        test = pd.read_csv(results / "splits" / "test_baseline.tsv", sep="\t")
        assert pred.participant_id.tolist() == test.participant_id.tolist()
        metrics = pd.read_csv(d / "metrics.tsv", sep="\t")
        row = models[(models.fold == f) & (models.seed == s) & (models.set == "test")].iloc[0]
        ba = metrics[(metrics.set == "test") & (metrics.metric == "balanced_accuracy")].value.iloc[0]
        assert row.balanced_accuracy == pytest.approx(ba)
        log = (results / "logs" / "train" / f"fold-{f}_seed-{s}.log").read_text()
        hist = pd.read_csv(d / "history.tsv", sep="\t")
        assert log.count(" | validation loss ") == len(hist) and "training on cpu" in log
    assert not list((results / "checkpoints").rglob("*.pt"))
    # the two seeds of a fold are different models
    from robustmaps.trained import load_trained

    a, _ = load_trained(results / "models" / "fold-0" / "seed-0" / "model.pt")
    b, _ = load_trained(results / "models" / "fold-0" / "seed-1" / "model.pt")
    assert any(not np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_imported_clinicadl_splits_are_inputs_of_the_split_rule(smoke_run, tmp_path):
    shutil.copytree(smoke_run / "results" / "splits", tmp_path / "imported")
    imp = overlay(tmp_path, {"split": {"import_dir": str(tmp_path / "imported")}})
    out = run_snakemake(smoke_run, "-n", "--configfile", str(SMOKE), imp).stdout
    assert job_counts(out) == {**FINAL, "split": 1, **TRAINING, **MASKS, **REFERENCE, **SALIENCY, **ANALYSIS, **PROB,
                                **HPO}
    assert str(tmp_path / "imported" / "split-1" / "validation_baseline.tsv") in out


def test_lint_is_clean(tmp_path):
    for cfg in (REPO / "config" / "config.yaml", SMOKE):
        proc = run_snakemake(tmp_path, "--lint", "--configfile", str(cfg))
        assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr
        assert "Lints for" not in proc.stdout + proc.stderr


def test_demo_plans_without_configfile(tmp_path):
    out = run_snakemake(tmp_path, "-n").stdout
    counts = job_counts(out)
    assert counts["synthetic_cohort"] == 2 and counts["split"] == 1 and counts["hpo_worker"] == 2
    assert "config/config.yaml" in out


def stub_caps(root: Path, cohort: str, n: int, sessions=("ses-M000", "ses-M012")) -> None:
    """Empty files with Clinica's names and a session table (enough for planning)."""
    rows = []
    for i in range(n):
        for s in sessions[: 1 + i % len(sessions)]:
            pid = f"sub-{cohort}{i:04d}"
            path = root / cohort / "caps" / "subjects" / pid / s / "t1" / "spm" / "segmentation" / \
                "normalized_space" / f"{pid}_{s}_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            rows.append((pid, s, ["CN", "AD", "MCI"][i % 3], 70 + i % 20, "MF"[i % 2]))
    pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "age", "sex"]).to_csv(
        root / cohort / "labels.tsv", sep="\t", index=False)


def test_paper_config_plans_against_a_stub_caps(tmp_path):
    stub_caps(tmp_path / "data", "ADNI", 700)
    stub_caps(tmp_path / "data", "AIBL", 120)
    # maps of excluded diagnoses (MCI) are never read: they need not exist
    for mci in (tmp_path / "data" / "ADNI" / "caps" / "subjects").glob("sub-ADNI*"):
        if int(mci.name[-4:]) % 3 == 2:
            shutil.rmtree(mci)
    out = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "paper.yaml")).stdout
    counts = job_counts(out)
    assert "synthetic_cohort" not in counts
    assert counts["qc"] == 2 and counts["preprocess"] == 2 and counts["split"] == 1
    assert counts["hpo_worker"] == 4 and counts["hpo_summary"] == 1  # the study's search, 4 GPU workers
    for k in range(5):
        assert f"results/splits/split-{k}/train.tsv" in out
    # its working grid is the native grid: no native-grid copy of any mask or map is planned
    assert "results/masks/group/main/AD/fold-0/seed-0/mask.nii.gz" in out and "_native.nii.gz" not in out
    assert "results/saliency/occlusion/fold-0/seed-0/maps.nii.gz" in out


# A real CAPS cohort (Clinica's and ClinicaDL's files) runs to the report: tests/integration/test_clinica.py.


NEGATIVE = REPO / "tests" / "config" / "negative_control.yaml"


@pytest.fixture(scope="module")
def negative_run(tmp_path_factory) -> Path:
    """The smoke config on the severity-0 cohort (tests/config/negative_control.yaml), with one
    seed, AD masks and one saliency method (what the check needs), and 4 test subjects per class."""
    workdir = tmp_path_factory.mktemp("negative")
    fast = overlay(workdir, {"split": {"test_per_class": 4}, "train": {"seeds": [0]},
                             "masks": {"targets": ["AD"], "sweep": {"points": []}},
                             "saliency": {"methods": ["vanilla"]}, "sobol": {"models": []}, "hpo": {"enabled": False}})
    run_snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE), str(NEGATIVE), fast)
    return workdir


def test_negative_control_finds_nothing(negative_run):
    """No planted signal: every model's test balanced accuracy CI contains chance, and neither
    the masks nor the maps recover the (unplanted) ROIs better than chance."""
    results = negative_run / "results"
    truth = pd.read_csv(results / "cohort" / "main" / "ground_truth.tsv", sep="\t")
    assert (truth.planted_reduction == 0).all()
    summary = pd.read_csv(results / "training" / "summary.tsv", sep="\t")
    test = summary[(summary["set"] == "test") & pd.to_numeric(summary.fold, errors="coerce").notna()]
    assert len(test) == 2
    assert ((test.balanced_accuracy_ci_low <= 0.5) & (0.5 <= test.balanced_accuracy_ci_high)).all(), test
    rec = pd.read_csv(results / "analysis" / "regions" / "recovery.tsv", sep="\t")
    groups = rec[(rec.kind == "group") & (rec.cohort == "main")]
    assert len(groups) == 2 and abs(groups.roc_auc.mean() - 0.5) < 0.15, groups
    by_kind = rec.groupby("kind").roc_auc.mean()
    assert (by_kind < 0.7).all(), by_kind  # the demo's group masks, with the signal: 0.98 (README)


# The HTML report, read in a browser: every category the study needs, every registered output
# listed on the rendered page (tests/integration/browser.py clicks through it in Chromium).
REPORT_CATEGORIES = ["Cohort and QC", "Splits", "Training", "Hyperparameter search", "Masks",
                     "Saliency and faithfulness", "Similarity", "Sensitivity", "Variance and tests", "Provenance"]


@pytest.fixture(scope="module")
def smoke_report(smoke_run):
    report = smoke_run / "results" / "report.html"
    run_snakemake(smoke_run, "--report", str(report), "--configfile", str(SMOKE))
    return report


def test_pseudonymised_report_names_no_participant_and_results_keep_the_ids(smoke_run, tmp_path):
    """report.pseudonymise on a copy of the smoke run: the key is made once, every table the
    report registers is a pseudonymised copy, no file of the report (a zip of everything it
    embeds) holds a real participant id or an absolute path, and results/ keeps the real ids."""
    import zipfile

    from robustmaps.privacy import pseudonym, read_key

    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, symlinks=True)
    private = overlay(tmp_path, {"report": {"pseudonymise": True}})
    plan = job_counts(run_snakemake(copy, "-n", "--configfile", str(SMOKE), private).stdout)
    assert plan.pop("pseudonym_key") == 1 and plan.pop("pseudonymise_cohort_qc") == 2
    assert {k for k in plan if not k.startswith("pseudonymise_")} == {"provenance", "all"}  # nothing recomputed
    run_snakemake(copy, "--cores", "2", "--configfile", str(SMOKE), private)
    key = read_key(copy / "results" / "private" / "pseudonym.key")
    real = pd.read_csv(copy / "results" / "cohort" / "main" / "qc.tsv", sep="\t")
    shown = pd.read_csv(copy / "results" / "pseudonymised" / "cohort" / "main" / "qc.tsv", sep="\t")
    assert list(shown.participant_id) == [pseudonym(p, key) for p in real.participant_id]
    assert real.participant_id.str.fullmatch(r"sub-S\d+").all()  # results/ keeps the real ids
    report = tmp_path / "report.zip"
    run_snakemake(copy, "--report", str(report), "--configfile", str(SMOKE), private)
    ids = set(real.participant_id) | set(pd.read_csv(copy / "results" / "cohort" / "independent" / "qc.tsv",
                                                     sep="\t").participant_id)
    leaks, tables = [], {}
    with zipfile.ZipFile(report) as z:
        for name in z.namelist():
            text = z.read(name).decode("utf-8", "replace")
            leaks += [(name, i) for i in ids if i in text]
            if name.endswith((".tsv", ".json")):
                tables[name] = text
                leaks += [(name, m) for m in re.findall(r"[\s\"'](/(?:tmp|home|work|data)/[^\s\"'<]*)", text)]
            if name.endswith("report.html"):
                html = text
    assert not leaks, leaks[:10]
    registered = json.loads(re.search(r'<script id="results">\s*(?:var )?results = (.*?);\s*</script>', html,
                                      re.S).group(1))
    shown = [p for p in registered if p.endswith((".tsv", ".json"))]
    assert len(shown) >= 19 and all(p.startswith("results/pseudonymised/") for p in shown), shown
    qc_tables = [text for name, text in tables.items() if name.endswith("/qc.tsv")]
    assert len(qc_tables) == 2 and pseudonym(real.participant_id[0], key) in "".join(qc_tables)


def test_report_registers_every_category_with_labelled_per_model_views(smoke_report, smoke_config):
    from browser import registered

    categories, results = registered(smoke_report)
    assert set(REPORT_CATEGORIES) <= set(categories), set(REPORT_CATEGORIES) - set(categories)
    for cat, subs in categories.items():
        for paths in subs.values():
            for path in paths:
                assert (smoke_report.parent.parent / path).is_file(), path
                assert results[path]["caption"].strip(), f"{path} has no caption"
    # one labelled view per model and method (saliency) and per model and target (masks)
    models = {(str(f), str(s)) for f, s in rmconfig.saliency_models(smoke_config, "saliency")}
    views = [results[p]["labels"] for p in categories["Saliency and faithfulness"]["Group map per model"]]
    assert {(v["method"], v["fold"], v["seed"]) for v in views} == {
        (m, f, s) for m in smoke_config["saliency"]["methods"] for f, s in models}
    mask_models = {(str(f), str(s)) for f, s in rmconfig.trained_models(smoke_config)}
    views = [results[p]["labels"] for p in categories["Masks"]["Group mask per model"]]
    assert {(v["target"], v["fold"], v["seed"]) for v in views} == {
        (t, f, s) for t in smoke_config["masks"]["targets"] for f, s in mask_models}
    qc = [results[p]["labels"]["cohort"] for p in categories["Cohort and QC"]["QC per session"]]
    assert sorted(qc) == sorted(smoke_config["data"]["cohorts"])


def test_report_shows_brain_maps_the_studys_figures_3_4_and_tables_2_3(smoke_report, smoke_run):
    """Brain maps in the masks', saliency and sensitivity categories; the sweep figures and the
    sweep table (with the study's printed values beside this run's) registered."""
    from browser import registered

    categories, _ = registered(smoke_report)
    for cat, name in (("Masks", "masks.png"), ("Saliency and faithfulness", "saliency.png"), ("Sensitivity", "sobol.png")):
        assert categories[cat]["Brain maps"] == [f"results/analysis/brain/{name}"], cat
    assert sorted(categories["Masks"]["Hyperparameter sweep (Figures 3-4)"]) == [
        "results/analysis/sweep/figure3_b1_b2.png", "results/analysis/sweep/figure4_l1_l2.png"]
    assert categories["Similarity"]["Hyperparameter sweep (Tables 2-3)"] == [
        "results/analysis/similarity/sweep_tables.tsv"]
    table = pd.read_csv(smoke_run / "results" / "analysis" / "similarity" / "sweep_tables.tsv", sep="\t")
    # the smoke sweep is one b1 series (0.1, 2) for both targets: the study printed 0.32 for that pair
    assert sorted(table.target) == ["AD", "CN"] and set(table.parameter) == {"b1"}
    assert (table.study_cosine == 0.32).all() and table.cosine.between(0, 1).all() and (table.n_models == 1).all()


def test_brain_maps_of_the_smoke_masks_outline_the_planted_rois(smoke_run, smoke_config, tmp_path):
    """The entry on the smoke run's masks (synthetic cohort): every panel has its colour bar, the
    configured cuts, L/R labels and the planted ROIs' outline, read from the nilearn displays."""
    import matplotlib.contour

    from robustmaps.jobs.analysis import brain_maps_entry

    results = smoke_run / "results"
    masks = {f"{f}/{s}": results / "masks" / "group" / "main" / "AD" / f"fold-{f}" / f"seed-{s}" / "mask.nii.gz"
             for f, s in rmconfig.trained_models(smoke_config)}
    out = {k: tmp_path / f"{k}.png" for k in ("masks", "saliency", "sobol")}
    cuts = smoke_config["analysis"]["cut_coords"]
    drawn = brain_maps_entry(results / "analysis" / "roi_vectors.tsv", results / "atlas" / "atlas.nii.gz",
                             results / "atlas" / "labels.tsv", results / "cohort" / "main" / "ground_truth.tsv", out,
                             masks=masks, maps={}, cut_coords=cuts)
    assert len(drawn["masks"]) == 2 * len(masks) and len(drawn["sobol"]) == len(smoke_config["sobol"]["models"])
    for _, _, d in drawn["masks"] + drawn["sobol"]:
        assert d._colorbar_ax in d.frame_axes.figure.axes
        assert [cut.coord for cut in d.axes.values()] == list(cuts)
        assert {"L", "R"} <= {t.get_text() for t in d.axes["y"].ax.texts}
        assert all(any(isinstance(c, matplotlib.contour.ContourSet) for c in cut.ax.collections)
                   for cut in d.axes.values())


def test_report_rendered_in_chromium_lists_every_output(smoke_report):
    from browser import chromium, unlisted

    if chromium() is None:
        if os.environ.get("ROBUSTMAPS_SYSTEM_TESTS") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run installs it as root on Debian)")
    assert unlisted(smoke_report) == []


def test_forcerun_one_rule_reruns_it_and_its_descendants_only(smoke_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, symlinks=True)
    untouched = copy / "results" / "masks" / "summary.tsv"
    stamp = untouched.stat().st_mtime_ns
    proc = run_snakemake(copy, "--cores", "2", "--forcerun", "roi_vectors", "--configfile", str(SMOKE))
    ran = sorted(set(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.M)) - {"all"})
    # roi_vectors feeds the similarity families, the regions, the brain maps (ROI-level maps) and
    # (through the pairs) the statistics
    assert ran == ["brain_maps", "provenance", "regions", "roi_vectors", "similarity", "stats"]
    assert untouched.stat().st_mtime_ns == stamp
    for name in ("roi_vectors.tsv", "similarity/summary.tsv", "stats/tests.tsv"):
        before = pd.read_csv(smoke_run / "results" / "analysis" / name, sep="\t")
        pd.testing.assert_frame_equal(pd.read_csv(copy / "results" / "analysis" / name, sep="\t"), before)
    assert "Nothing to be done" in run_snakemake(copy, "-n", "--configfile", str(SMOKE)).stdout


def test_session_stacks_are_temporary_unless_kept(smoke_run, smoke_config, tmp_path):
    """storage.keep_session_maps false (the default): the per-session stacks are deleted once the
    ROI vectors have read them, the results stay the same and nothing is planned afterwards; a
    change that re-runs the ROI vectors then re-computes the stacks (the documented price)."""
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, symlinks=True)
    temp = overlay(tmp_path, {"storage": {"keep_session_maps": False}})
    stacks = sorted(p.relative_to(copy) for p in (copy / "results").rglob("*.nii.gz")
                    if p.name in ("masks.nii.gz", "maps.nii.gz") and "actmax" not in p.parts)
    assert len(stacks) == 2 + len(METHODS)  # session masks of both targets, maps of every method
    # switching the default back on an existing run changes no mask or map job (their outputs exist)
    assert job_counts(run_snakemake(copy, "-n", "--configfile", str(SMOKE), temp).stdout) == {
        "provenance": 1, "all": 1}
    proc = run_snakemake(copy, "--cores", "2", "--forcerun", "roi_vectors", "--configfile", str(SMOKE), temp)
    assert not [p for p in stacks if (copy / p).exists()], proc.stdout + proc.stderr
    assert all(f"Removing temporary output {p}." in proc.stdout + proc.stderr for p in stacks)
    for name in ("roi_vectors.tsv", "similarity/summary.tsv"):
        assert (copy / "results" / "analysis" / name).read_bytes() == (
            smoke_run / "results" / "analysis" / name).read_bytes(), name
    assert "Nothing to be done" in run_snakemake(copy, "-n", "--configfile", str(SMOKE), temp).stdout
    # the demo's acceptance check reads the ROI vectors of the deleted maps instead
    assert acceptance.check_saliency(copy / "results", {**smoke_config, "storage": {"keep_session_maps": False}}) == []
    both = overlay(tmp_path, {"storage": {"keep_session_maps": False}, "roi": {"masks": {"reduction": "mean"}}})
    plan = job_counts(run_snakemake(copy, "-n", "--configfile", str(SMOKE), both).stdout)
    assert plan["session_masks"] == 2 and all(plan[m] == 1 for m in METHODS) and plan["roi_vectors"] == 1


def rule_graph(dot: str) -> tuple[set, set]:
    """(rule names, edges between rule names) of `snakemake --rulegraph` output (node numbers and
    the order of lines vary between runs)."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    return set(names.values()), edges


def test_readme_rule_graph_is_current(tmp_path):
    """docs/rulegraph.png (README) is drawn from docs/rulegraph.dot: `make rulegraph` redraws both."""
    proc = run_snakemake(tmp_path, "--rulegraph", "--configfile", str(REPO / "config" / "config.yaml"))
    rules, edges = rule_graph(proc.stdout)
    assert len(rules) > 30 and ("train", "evaluate") in edges
    assert (rules, edges) == rule_graph((REPO / "docs" / "rulegraph.dot").read_text()), "run `make rulegraph`"


def test_provenance_names_every_rule_of_the_study_and_the_commit(smoke_run):
    """results/provenance.json, walked back from the final files through Snakemake's records,
    lists exactly the rules of the smoke run's DAG (the provenance itself and `all` aside)."""
    doc = json.loads((smoke_run / "results" / "provenance.json").read_text())
    dag, _ = rule_graph(run_snakemake(smoke_run, "--rulegraph", "--configfile", str(SMOKE)).stdout)
    assert set(doc["rules"]) == dag - {"all", "provenance"}
    assert all(len(r["params_sha256"]) == 64 and r["param_sets"] >= 1 for r in doc["rules"].values())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert doc["workflow"]["commit"].removesuffix("-dirty") == (head.stdout.strip() if head.returncode == 0
                                                                else "unknown")
    import torch
    assert doc["packages"]["torch"] == torch.__version__


def test_profiles_plan_gpu_jobs(tmp_path):
    """The Slurm site profile as installed by `make slurm-profile` (XDG_CONFIG_HOME), used as
    `snakemake --profile slurm` from another directory, plans a GPU for every network rule
    (whatever this machine has) with attempt-scaled resources: per-rule sizes from the workflow
    profile (profiles/default), the site's default-resources kept for the others. The local
    profile asks a GPU only where one is visible."""
    def by_rule(out):
        jobs = {}
        for job in job_blocks(out):
            jobs.setdefault(job["rule"], []).append(job)
        return jobs

    install_site_profile(tmp_path / "xdg")
    (tmp_path / "elsewhere").mkdir()
    proc = snakemake_as_user(tmp_path / "elsewhere", tmp_path / "xdg", "-n", "--configfile", str(SMOKE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Using profiles slurm and workflow specific profile " + str(REPO / "profiles" / "default") in proc.stderr
    slurm = by_rule(proc.stdout)
    for rule in ("train", "hpo_worker", "group_mask", "session_masks", "gradcam", "sobol", "prob_cnn"):
        assert slurm.get(rule) and all(j["gpu"] == 1 for j in slurm[rule]), rule
    train = slurm["train"][0]["resources"]
    assert f"mem_mb={profile_runtime('train', 'mem_mb')}" in train and f"runtime={profile_runtime('train')}" in train
    assert "cpus_per_task=1" in train
    assert all("runtime=60" in j["resources"] for j in slurm["qc"])  # the site's default-resources
    for rule in ("qc", "split", "evaluate", "roi_vectors"):
        assert slurm.get(rule) and not any("gpu=" in j["resources"] for j in slurm[rule]), rule
    local = by_rule(run_snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"), "-n",
                                  "--configfile", str(SMOKE)).stdout)
    assert local["train"] and all(j["gpu"] == LOCAL_GPU for j in local["train"])


def test_make_slurm_profile_never_replaces_an_existing_profile(tmp_path):
    """`make slurm-profile` installs the template once; a site's own `slurm` profile stays as it is.
    The installed profile names its partition file relative to itself and sets no account."""
    installed = install_site_profile(tmp_path)
    text = (installed / "config.yaml").read_text()
    assert re.search(r"^slurm-partition-config: partitions.yaml\b", text, re.M) and (installed / "partitions.yaml").is_file()
    assert not re.search(r"^\s*slurm_account:", text, re.M)
    (installed / "config.yaml").write_text("executor: slurm\n# the site's own\n")
    install_site_profile(tmp_path)
    assert (installed / "config.yaml").read_text() == "executor: slurm\n# the site's own\n"


def test_cluster_run_without_configfile_stops_before_the_demo_starts(tmp_path):
    """`snakemake --profile slurm` without --configfile stops at planning with one message instead
    of submitting the synthetic demo (config/config.yaml stays the default of local runs only)."""
    install_site_profile(tmp_path / "xdg")
    proc = snakemake_as_user(tmp_path, tmp_path / "xdg", "-n")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [next(line for line in proc.stderr.splitlines() if "no --configfile given" in line)], proc.stderr
    assert "--configfile config/paper.yaml" in errors[0] and "Traceback" not in proc.stderr
    assert "synthetic_cohort" not in proc.stdout and not (tmp_path / "results").exists()


def test_paper_config_without_the_data_stops_naming_the_missing_folder(tmp_path):
    """config/paper.yaml as shipped, in a directory without ADNI/AIBL: planning stops with one line
    naming the CAPS folder, its config key and the working directory relative paths are read from."""
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "paper.yaml"), check=False)
    assert proc.returncode == 1
    assert (f"ERROR: data/ADNI/caps: CAPS folder of cohort 'main' not found (relative to the working directory "
            f"{tmp_path}): set data.cohorts.main.caps.caps_dir") in proc.stderr, proc.stderr[-2000:]
    (tmp_path / "data" / "ADNI" / "caps").mkdir(parents=True)
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "paper.yaml"), check=False)
    assert "ERROR: data/ADNI/labels.tsv: session table of cohort 'main' not found" in proc.stderr, proc.stderr[-2000:]
    assert "data.cohorts.main.caps.tsv" in proc.stderr and "Traceback" not in proc.stderr
