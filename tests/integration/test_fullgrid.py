"""The paper protocol at the study's grid (issue 18): config/paper.yaml + config/rehearsal.yaml with
every count at its minimum (tests/config/fullgrid.yaml) runs every rule of its plan once at
121 x 145 x 121, and the rehearsal's engineering checks hold on it (every planned job ran on the
full grid and logged its peak memory, under 8 GiB). The science needs the real counts: `make
rehearsal` (about 90 minutes here) prints it.

The run starts in the background when the tests are collected (tests/conftest.py, fullgrid_run)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FULLGRID, REPO
from robustmaps import acceptance
from robustmaps import config as rmconfig

pytestmark = pytest.mark.workflow

CONFIGS = [str(c) for c in FULLGRID]


def test_every_rule_of_the_paper_plan_runs_once_at_the_study_grid(fullgrid_run):
    results = fullgrid_run / "results"
    config = rmconfig.load(*CONFIGS)
    plan = acceptance.planned_jobs(fullgrid_run, CONFIGS)
    # the paper's plan: the search, every mask kind, every saliency method, Sobol, prob_CNN
    assert {"hpo_worker", "train", "group_mask", "sweep_mask", "session_masks", "sobol", "actmax",
            "prob_cnn", "similarity", "stats", *config["saliency"]["methods"]} <= set(plan)
    assert acceptance.check_full_grid_plan(results, config, plan) == []
    assert acceptance.check_memory(results, config) == []
    costs = acceptance.rule_costs(results).set_index("rule")
    # every script job logged the kernel's peak (the `run:` rule provenance has Snakemake's sample)
    assert costs.drop(index="provenance").exact.all(), costs[~costs.exact]
    # the networks saw the study's images: the trained model's input and a map on the full grid
    model = torch.load(results / "models" / "fold-0" / "seed-0" / "model.pt", map_location="cpu", weights_only=True)
    assert tuple(model["in_shape"])[-3:] == acceptance.STUDY_SHAPE and model["architecture"]["n_blocks"] == 7
    import nibabel as nib

    maps = nib.load(results / "saliency" / "gradcam" / "fold-0" / "seed-0" / "maps.nii.gz")
    assert maps.shape[:3] == acceptance.STUDY_SHAPE and np.allclose(maps.header.get_zooms()[:3], 1.5)


def test_the_rehearsal_command_prints_the_engineering_checks_and_the_cost_table(fullgrid_run, tmp_path):
    """`make rehearsal`'s last command on this run (without --paper: the minimal config also cuts
    counts that the rehearsal keeps, SmoothGrad's samples, the bootstraps)."""
    table = tmp_path / "rule_costs.tsv"
    proc = subprocess.run([sys.executable, "-m", "robustmaps.acceptance", "--rehearsal", str(fullgrid_run),
                           "--configfile", *CONFIGS, "--table", str(table), "--engineering-only"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ok   every planned job ran at 121 x 145 x 121" in out
    assert "ok   every job's peak resident memory <= 8192 MiB" in out
    import pandas as pd

    costs = pd.read_csv(table, sep="\t")
    assert (costs.rss_mib_max > 100).all() and (costs.seconds_total > 0).all()
