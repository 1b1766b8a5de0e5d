import json
import subprocess

from robustmaps.provenance import git_commit, package_versions, rule_params, write_provenance

# Snakemake's records of a tiny study: path -> the job that wrote it
RECORDS = {
    "results/report.tsv": {"rule": "summary", "params": ["'mean'"], "input": ["results/m0.tsv", "results/m1.tsv"]},
    "results/m0.tsv": {"rule": "model", "params": ["0.001", "{'epochs': 3}"], "input": ["data/cohort.tsv"]},
    "results/m1.tsv": {"rule": "model", "params": ["0.001", "{'epochs': 3}"], "input": ["data/cohort.tsv"]},
    "results/unused.tsv": {"rule": "orphan", "params": [], "input": []},
}


def test_rule_params_walks_back_from_the_targets_through_the_recorded_inputs():
    out = rule_params(["results/report.tsv"], RECORDS.get)
    # the orphan's output is not upstream of the target; data/cohort.tsv has no record (user data)
    assert sorted(out) == ["model", "summary"]
    assert out["model"]["param_sets"] == 1 and out["summary"]["param_sets"] == 1
    changed = {**RECORDS, "results/m1.tsv": {**RECORDS["results/m1.tsv"], "params": ["0.01", "{'epochs': 3}"]}}
    other = rule_params(["results/report.tsv"], changed.get)
    assert other["model"]["param_sets"] == 2
    assert other["model"]["params_sha256"] != out["model"]["params_sha256"]
    assert other["summary"] == out["summary"]  # a rule's hash depends on its own params only


def test_rule_params_do_not_depend_on_the_order_of_targets_or_records():
    a = rule_params(["results/m1.tsv", "results/report.tsv"], RECORDS.get)
    b = rule_params(["results/report.tsv", "results/m0.tsv"], dict(reversed(list(RECORDS.items()))).get)
    assert a == b


def test_provenance_file_is_the_same_bytes_twice_and_has_no_times(tmp_path):
    config = {"train": {"lr": 0.001}, "seeds": [0, 1]}
    write_provenance(tmp_path / "a.json", ["results/report.tsv"], RECORDS.get, "abc", config)
    write_provenance(tmp_path / "b.json", ["results/report.tsv"], RECORDS.get, "abc", dict(reversed(config.items())))
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["workflow"]["commit"] == "abc" and doc["packages"]["torch"] and doc["packages"]["snakemake"]
    assert not any(word in (tmp_path / "a.json").read_text().lower() for word in ("time", "date"))
    write_provenance(tmp_path / "c.json", ["results/report.tsv"], RECORDS.get, "abc", {**config, "seeds": [0]})
    other = json.loads((tmp_path / "c.json").read_text())
    assert other["workflow"]["config_sha256"] != doc["workflow"]["config_sha256"]


def test_package_versions_name_missing_packages():
    versions = package_versions(["numpy", "surely-not-installed-robustmaps"])
    assert versions["numpy"].count(".") >= 1 and versions["surely-not-installed-robustmaps"] is None


def test_git_commit_of_a_checkout_clean_dirty_and_outside_git(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "untracked.txt").write_text("results are not tracked\n")
    assert git_commit(tmp_path) == sha
    (tmp_path / "f.txt").write_text("b\n")
    assert git_commit(tmp_path) == sha + "-dirty"
