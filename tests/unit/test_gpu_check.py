"""benchmarks/gpu_check.sh's CPU fallback (issue 18, item 5): the prepared GPU check runs
end to end where CUDA is absent (tiny sizes) and writes the table the GPU run would write."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cpu_fallback_runs_every_step_and_writes_the_table(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(out / "gpu_check.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["check", "value", "unit", "goal", "ok"]
    rows = dict(zip(table.check, table.value))
    assert rows["device"].startswith("cpu (fallback")
    # every step ran, on the device it was meant for
    ran = dict(kv.split(":") for kv in rows["every step ran on cpu"].split(","))
    assert set(ran) == {"bare", "train", "group_mask", "session_masks", "gradcam"}
    assert set(ran.values()) == {"cpu"}
    assert table.set_index("check").loc["every step ran on cpu", "ok"] == "ok"
    for check in ("training: workflow loop", "training: bare forward/backward loop", "training throughput ratio",
                  "group mask", "session masks", "saliency: Grad-CAM"):
        assert float(rows[check]) > 0, check
    # the cost model's units, as paper_cost.py --units reads them
    units = json.loads((out / "paper_cost_quick.json").read_text())["units"]
    assert set(units) == {"forward", "train", "group_mask", "session_mask", "occlusion", "grad", "grad1", "sobol"}
    assert all(u["seconds"] > 0 for u in units.values())
    assert all(f"unit: {name}" in rows for name in units)
    assert "FAILED" not in set(table.ok)


def test_schema_defaults_without_jsonschema_match_the_validated_config():
    # the lent GPU machine has no jsonschema: paper_cost.py fills the schema's defaults itself
    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_cost import load_config, schema_defaults

    raw = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    filled = schema_defaults(raw, yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))
    assert filled == load_config(REPO / "config" / "paper.yaml")
    assert filled["masks"]["session"]["max_batch"] == 16 and filled["saliency"]["occlusion"]["stride"] == 4


def test_cost_model_table_from_saved_units(tmp_path, monkeypatch):
    """paper_cost.py predicts every rule of paper.yaml from a units file (what a GPU run writes)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import paper_cost

    # the template's window fractions (nilearn's resampling at 1.5 mm: slow) are not under test here
    monkeypatch.setattr(paper_cost, "occlusion_fractions", lambda *a: {"exact_zero": 0.9, "brain": 0.4})
    units = {name: {"seconds": s, "samples": [s], "batch": 1} for name, s in
             {"forward": 1e-3, "train": 3e-3, "group_mask": 3e-3, "session_mask": 3e-3, "occlusion": 1e-3,
              "grad": 3e-3, "grad1": 3e-3, "sobol": 1e-3}.items()}
    saved = tmp_path / "units.json"
    saved.write_text(json.dumps({"device": "cuda", "device_label": "test GPU", "shape": [121, 145, 121],
                                 "repeats": 1, "units": units}))
    res = paper_cost.main(["--units", str(saved), "--json", str(tmp_path / "table.json")])
    tables = res["tables"]
    assert set(tables) == {"cuda_before", "cuda_after", "cuda_zero_background"}
    rows = {r["rule"]: r for r in tables["cuda_after"]["rows"]}
    for rule in ("train", "session_masks", "occlusion", "sobol", "lots", "smoothgrad", "gradcam"):
        assert rows[rule]["jobs"] == 15 and rows[rule]["total_s_typical"] > 0
    # occlusion: 2 maps (the map and its coherency re-run) x 200 images x 32,400 windows x forward
    before = {r["rule"]: r for r in tables["cuda_before"]["rows"]}["occlusion"]
    assert before["units"]["occlusion"] == pytest.approx(2 * 200 * 32400)
    # after the skip: the map's windows not wholly zero; the coherency pass (x * map + (1 - map) mu) runs all
    assert rows["occlusion"]["units"]["occlusion"] == pytest.approx((0.9 + 1) * 200 * 32400)
    # session masks at the cap: 5,000 epochs x 329 sessions x the unit
    assert rows["session_masks"]["job_s_cap"] == pytest.approx(5000 * 100 * 1106 / 336 * 3e-3)
    hpo = [r for r in tables["cuda_after"]["rows"] if r["rule"].startswith("hpo")]
    assert len(hpo) == 3 and hpo[2]["total_s_typical"] > hpo[1]["total_s_typical"] > hpo[0]["total_s_typical"]
    assert json.loads((tmp_path / "table.json").read_text())["tables"]["cuda_after"]["totals"]["protocol_typical_h"] > 0


def test_the_workflow_profile_runtimes_are_the_cost_models():
    """Every rule the cost model times gets, in profiles/default, the runtime paper_cost.py derives
    from the saved model of config/paper.yaml (benchmarks/paper_cost_cpu.json: margin x the GPU
    column at the caps + start-up + reading the store), and the derivation covers each job's time:
    no paper job is predicted to reach its limit."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import paper_cost

    cfg = paper_cost.load_config(REPO / "config" / "paper.yaml")
    runtimes, label = paper_cost.profile_runtimes(REPO / "benchmarks" / "paper_cost_cpu.json", cfg)
    assert "ESTIMATE" in label  # no GPU measured the units yet: the estimate's margin applies
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
    assert {rule: profile.get(rule, {}).get("runtime") for rule in runtimes} == {
        rule: f"{minutes} * attempt" for rule, minutes in runtimes.items()}
    rows = json.loads((REPO / "benchmarks" / "paper_cost_cpu.json").read_text())["tables"]["gpu_estimate_after"]["rows"]
    for r in rows:
        rule = "hpo_worker" if r["rule"].startswith("hpo") else r["rule"].split(" (")[0]
        trials = -(-cfg["hpo"]["n_trials"] // cfg["hpo"]["workers"])  # a worker's share of the search
        per_job = r["job_s_cap"] * (trials if rule == "hpo_worker" else 1)
        if rule != "hpo_worker" or "mean" in r["rule"]:
            assert 60 * runtimes[rule] >= paper_cost.SLURM_MARGIN["estimate"] * per_job, r["rule"]
    # the rules that dominate get hours, not the site's default hour
    assert runtimes["occlusion"] > 60 and runtimes["session_masks"] > 60 and runtimes["hpo_worker"] > 600


def test_the_workflow_profile_memory_covers_the_rehearsals_peaks():
    """Every rule's memory request (profiles/default's `mem_mb`, else the Slurm site profile's
    default) is at least MEM_MARGIN x its peak at the paper's counts, extrapolated from the peak
    the rehearsal measured at the study's grid (benchmarks/rehearsal_costs.tsv, what `make
    rehearsal` writes); the rules above the site default carry paper_cost.profile_memory's value."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "benchmarks"))
    import paper_cost

    costs_tsv = REPO / "benchmarks" / "rehearsal_costs.tsv"
    costs = pd.read_csv(costs_tsv, sep="\t")
    site = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())["default-resources"]
    assert site["mem_mb"] == f"{paper_cost.SITE_DEFAULT_MEM_MB} * attempt"
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
    derived = paper_cost.profile_memory(costs_tsv)
    asked = {rule: int(profile.get(rule, {}).get("mem_mb", site["mem_mb"]).split("*")[0]) for rule in costs.rule}
    # exactly the derivation, but for the search's workers (8 GB: its larger networks)
    assert {r: asked[r] for r in derived if r != "hpo_worker"} == {r: v for r, v in derived.items() if r != "hpo_worker"}
    assert asked["hpo_worker"] >= max(8000, derived.get("hpo_worker", 0))
    for r in costs.itertuples():
        need = paper_cost.MEM_MARGIN * paper_cost.paper_memory_mib(r.rule, r.rss_mib_max) * 2**20 / 1e6
        assert asked[r.rule] >= need, (r.rule, asked[r.rule], need)
    # the stacks grow with the paper's counts: the session masks' job is the largest
    assert max(derived, key=derived.get) == "session_masks"
