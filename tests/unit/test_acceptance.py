"""The rehearsal's own checks (robustmaps.acceptance): the cuts it may make to config/paper.yaml,
the per-rule cost table it reads from the jobs' benchmarks and logs, and its memory check."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest

from robustmaps import acceptance
from robustmaps import config as rmconfig
from robustmaps.runner import PEAK_RSS_LINE, PEAK_RSS_PATTERN, peak_rss_mib

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "config" / "paper.yaml"
REHEARSAL = REPO / "config" / "rehearsal.yaml"
FULLGRID = REPO / "tests" / "config" / "fullgrid.yaml"


@pytest.fixture(scope="module")
def configs():
    return rmconfig.load(PAPER), rmconfig.load(PAPER, REHEARSAL)


def test_the_rehearsal_cuts_only_counts_of_the_paper_protocol(configs):
    paper, rehearsal = configs
    cuts = acceptance.config_cuts(paper, rehearsal)
    assert acceptance.forbidden_cuts(cuts) == []
    keys = {k for k, _, _ in cuts}
    # the study's grid, network, mask and saliency methods are paper.yaml's
    assert rehearsal["data"]["grid"] == paper["data"]["grid"] and rehearsal["preprocess"] == paper["preprocess"]
    assert rehearsal["train"]["architecture"] == paper["train"]["architecture"]
    for section in ("masks", "saliency", "sobol", "roi", "analysis"):
        assert not any(k.startswith(section) and not any(k.startswith(c) for c in acceptance.REHEARSAL_CUTS)
                       for k in keys)
    assert {"train.lr", "masks.sweep.points", "saliency.occlusion.stride"} <= keys
    # every cut is listed in the file with its paper value ("paper: ..." on its line or above it)
    text = REHEARSAL.read_text()
    assert text.count("paper:") >= 20


@pytest.mark.parametrize("change, word", [
    ({"masks": {"l2": 1.0e-3}}, "masks.l2"),
    ({"masks": {"norm": "mean"}}, "masks.norm"),
    ({"saliency": {"smoothgrad": {"n_samples": 5}}}, "saliency.smoothgrad.n_samples"),
    ({"data": {"cohorts": {"main": {"synthetic": {"atrophy": {"severity": [0.5, 0.6]}}}}}}, "atrophy"),
    ({"train": {"architecture": {"n_blocks": 5}}}, "train.architecture.n_blocks"),
    ({"masks": {"sweep": {"points": [{"b1": 0.3, "b2": 1, "l1": 1.0e-4, "l2": 1.0e-3}]}}}, "not one of the paper's"),
])
def test_a_cut_of_a_method_setting_is_named(configs, change, word):
    paper, rehearsal = configs
    changed = copy.deepcopy(rehearsal)
    rmconfig._merge(changed, change)
    problems = acceptance.forbidden_cuts(acceptance.config_cuts(paper, changed))
    assert problems and any(word in p for p in problems), problems


def test_the_minimal_full_grid_config_only_lowers_the_rehearsal_counts(configs):
    _, rehearsal = configs
    minimal = rmconfig.load(PAPER, REHEARSAL, FULLGRID)
    assert minimal["data"]["grid"]["shape"] == list(acceptance.STUDY_SHAPE)
    assert minimal["preprocess"]["voxel_size"] is None
    for key, old, new in acceptance.config_cuts(rehearsal, minimal):
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
            assert new <= old or key.endswith("stride") or key.endswith("patch"), (key, old, new)


def _bench(path: Path, seconds: float, max_rss) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:01\t{max_rss}\t1\t1\t1\t0\t0\t0\t1\n")


def test_rule_costs_take_the_logs_exact_peaks_over_the_sampled_ones(tmp_path):
    results = tmp_path / "results"
    _bench(results / "benchmarks" / "train" / "fold-0_seed-0.tsv", 100.0, 900.0)
    _bench(results / "benchmarks" / "train" / "fold-1_seed-0.tsv", 50.0, 800.0)
    _bench(results / "benchmarks" / "provenance" / "provenance.tsv", 0.5, "NA")
    _bench(results / "benchmarks" / "hpo_worker" / "worker-0.tsv", 10.0, 300.0)
    # a job's name may hold folders (the pseudonymised copy of a per-cohort table)
    _bench(results / "benchmarks" / "pseudonymise_cohort_qc" / "cohort" / "main" / "qc.tsv.tsv", 0.4, 200.0)
    (results / "logs" / "train").mkdir(parents=True)
    (results / "logs" / "train" / "fold-0_seed-0.log").write_text("12:00:00 train: epoch 1\n12:00:01 train: "
                                                                   + PEAK_RSS_LINE % (9000.4, 12.0) + "\n")
    (results / "logs" / "train" / "fold-1_seed-0.log").write_text("no peak line: a job killed before its end\n")
    (results / "hpo" / "logs").mkdir(parents=True)
    (results / "hpo" / "logs" / "worker-0.log").write_text("12:00:00 hpo_worker: "
                                                           + PEAK_RSS_LINE % (400.0, 8500.0) + "\n")
    costs = acceptance.rule_costs(results).set_index("rule")
    assert costs.loc["train", "jobs"] == 2 and costs.loc["train", "seconds_total"] == 150.0
    assert costs.loc["train", "rss_mib_max"] == 9000.0 and not costs.loc["train", "exact"]
    assert costs.loc["hpo_worker", "rss_mib_max"] == 8500.0  # the trial child's peak
    assert costs.loc["provenance", "rss_mib_max"] != costs.loc["provenance", "rss_mib_max"]  # NA: not measured
    assert costs.loc["pseudonymise_cohort_qc", "jobs"] == 1
    problems = acceptance.check_memory(results, {}, limit_mib=8192)
    assert sorted(p.split(":")[0] for p in problems) == ["rule hpo_worker", "rule train"]


def test_the_plan_check_names_a_rule_whose_jobs_did_not_all_run(tmp_path):
    results = tmp_path / "results"
    _bench(results / "benchmarks" / "train" / "fold-0_seed-0.tsv", 1.0, 10.0)
    config = rmconfig.load(PAPER, REHEARSAL)
    problems = acceptance.check_full_grid_plan(results, config, {"train": 2, "sobol": 1})
    assert problems == ["rule sobol: 0 of its 1 planned job(s) recorded a benchmark",
                        "rule train: 1 of its 2 planned job(s) recorded a benchmark"]


def test_a_job_logs_its_peak_memory_last(tmp_path):
    import re

    import numpy as np

    from robustmaps.runner import script

    class Smk:
        rule, threads, output = "demo", 1, [str(tmp_path / "out.txt")]
        log = [str(tmp_path / "demo.log")]

    before = peak_rss_mib()[0]
    with script(Smk()):
        block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        block.sum()
    logging.shutdown()
    last = Path(Smk.log[0]).read_text().strip().splitlines()[-1]
    peak = float(re.search(PEAK_RSS_PATTERN, last).group(1))
    assert peak >= round(before) - 1 and peak >= 64  # the log line prints whole MiB
