"""Hyperparameter search (robustmaps.hpo): seed 003's random-search arithmetic, feasibility of a
point, and the shared optuna study run by workers (exact trial count, failures recorded,
continuation after a killed worker) on the tiny trained-model cohort."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from robustmaps import hpo
from robustmaps.config import SEARCH_KEYS
from robustmaps.io import InputError
from robustmaps.jobs.hpo import hpo_summary

BASELINE = {"n_blocks": 2, "filters": 4, "sub_blocks": 1, "downsampling": "maxpool", "fc_layers": 1, "dropout": 0.0,
            "lr": 3e-3, "weight_decay": 0.0, "batch_size": 6, "normalisation": "none"}


def params(n_trials=4, max_epochs=2, space=None, sampler="random", pruner="none"):
    return {"n_trials": n_trials, "sampler": sampler, "pruner": pruner,
            "hyperband": {"min_resource": 1, "max_resource": None, "reduction_factor": 3}, "seed": 0,
            "space": space if space is not None else {"filters": {"choices": [2, 4]}}, "baseline": BASELINE,
            "max_parameters": 10_000_000,
            "train": {"max_epochs": max_epochs, "patience": max_epochs, "min_epochs": 0, "cache_size": 64,
                      "amp": False}}


@pytest.mark.parametrize("top,expected", [(0.01, (69, 298, 458)), (0.05, (14, 59, 90)), (0.10, (7, 29, 44))])
def test_random_search_draws_match_seed_003_table_2_2(top, expected):
    assert tuple(hpo.draws_needed(p, top) for p in (0.5, 0.95, 0.99)) == expected
    n = expected[0]
    assert hpo.p_top_found(n, top) > 0.5 >= hpo.p_top_found(n - 1, top)
    assert hpo.p_top_found(0, top) == 0.0


def test_a_point_too_large_for_the_input_is_infeasible():
    assert hpo.max_blocks((16, 20, 16)) == 4 and hpo.max_blocks((121, 145, 121)) == 7
    ok = hpo.check_feasible({**BASELINE, "n_blocks": 4}, (16, 20, 16), 10**7)
    assert ok > 0
    with pytest.raises(hpo.InfeasibleTrial, match="5 blocks on a"):
        hpo.check_feasible({**BASELINE, "n_blocks": 5}, (16, 20, 16), 10**7)
    with pytest.raises(hpo.InfeasibleTrial, match="parameters"):
        hpo.check_feasible({**BASELINE, "filters": 64, "fc_layers": 3}, (16, 20, 16), 1000)


def run_worker(data, journal, out, worker, p, workers=None, **popen):
    """A worker as its own process (as the cluster runs it); returns the Popen."""
    code = ("import logging, sys, yaml; logging.basicConfig(level=logging.INFO); "
            "from robustmaps.jobs.hpo import hpo_worker; "
            "a = yaml.safe_load(open(sys.argv[1])); hpo_worker(*a['args'], **a['kwargs'])")
    spec = out.with_suffix(".yaml")
    spec.write_text(yaml.safe_dump({"args": [str(data["store"]), str(data["index"]), str(data["train"]),
                                             str(data["validation"]), str(journal), str(out)],
                                    "kwargs": {"worker": worker, "params": p, "device": "cpu", "threads": 1,
                                               "workers": workers}}))
    return subprocess.Popen([sys.executable, "-c", code, str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def running_trial(journal, name, epochs=1, timeout=300):
    """Wait until a trial of study ``name`` is RUNNING with ``epochs`` reported epochs; return it."""
    import optuna

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        if not journal.exists():
            continue
        try:
            study = optuna.load_study(study_name=name, storage=hpo.storage(journal))
        except KeyError:
            continue
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state.name == "RUNNING" and len(t.intermediate_values) >= epochs]
        if running:
            return running[0]
    raise AssertionError("no trial started")


def summarise(data, journal, tmp_path, p, workers):
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("trials", "tsv"), ("best", "yaml"), ("history", "png"),
                                                      ("importance", "png"), ("random_search", "png"))}
    hpo_summary(journal, workers, out, params=p, index_tsv=data["index"], train_tsv=data["train"],
                    validation_tsv=data["validation"])
    return pd.read_csv(out["trials"], sep="\t"), yaml.safe_load(out["best"].read_text())


def test_two_workers_share_one_study_and_finish_exactly_n_trials(trained_model, tmp_path):
    # filters 2 or 4; n_blocks 2 or 5 (5 is too many for 16 x 20 x 16); a downsampling PaperCNN
    # refuses: every kind of bad point must be recorded as a failed trial, not stop a worker
    space = {"filters": {"choices": [2, 4]}, "n_blocks": {"choices": [2, 5]},
             "downsampling": {"choices": ["maxpool", "avgpool"]}}
    p = params(n_trials=6, space=space)
    journal = tmp_path / "study" / "journal.log"
    outs = [tmp_path / f"worker-{w}.tsv" for w in range(2)]
    procs = [run_worker(trained_model, journal, outs[w], w, p) for w in range(2)]
    logs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), logs
    table, best = summarise(trained_model, journal, tmp_path, p, outs)
    assert len(table) == 6 and table.number.is_unique
    assert set(table.state) <= {"COMPLETE", "FAIL"}
    per_worker = [pd.read_csv(o, sep="\t") for o in outs]
    assert sorted(pd.concat(per_worker).number) == sorted(table.number)  # each trial ran in one worker
    # trial 0 is the baseline
    first = table.set_index("number").loc[0]
    assert first.params_n_blocks == 2 and first.params_downsampling == "maxpool" and first.state == "COMPLETE"
    fails = table[table.state == "FAIL"]
    infeasible = (table.params_n_blocks == 5) | (table.params_downsampling == "avgpool")
    assert set(fails.number) == set(table[infeasible].number)
    assert fails.error.str.contains("infeasible|downsampling").all()
    done = table[table.state == "COMPLETE"].sort_values(["value", "number"], ascending=[False, True])
    assert best["trial"] == done.number.iloc[0]
    assert best["validation_balanced_accuracy"] == pytest.approx(done.value.iloc[0])
    assert best["settings"]["architecture"]["name"] == "paper" and best["settings"]["lr"] == BASELINE["lr"]
    # the summary refuses a journal that lacks the workers' trials (removed or replaced)
    stray = tmp_path / "stray.tsv"
    stray.write_text("number\tstate\n99\tCOMPLETE\n")
    with pytest.raises(InputError, match="trials \\[99\\] of the workers are not in study"):
        summarise(trained_model, journal, tmp_path, p, outs + [stray])
    # a re-run of a worker finds the study complete and runs nothing more
    again = run_worker(trained_model, journal, tmp_path / "again.tsv", 0, p)
    assert again.wait(timeout=300) == 0
    assert len(summarise(trained_model, journal, tmp_path, p, outs)[0]) == 6


def test_random_search_draws_the_same_points_whatever_the_workers(trained_model, tmp_path):
    p = params(n_trials=4, max_epochs=1, space={"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                 "filters": {"choices": [2, 4]}})
    one = tmp_path / "one" / "journal.log"
    proc = run_worker(trained_model, one, tmp_path / "one.tsv", 0, p)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    a, _ = summarise(trained_model, one, tmp_path, p, [tmp_path / "one.tsv"])
    two = tmp_path / "two" / "journal.log"
    procs = [run_worker(trained_model, two, tmp_path / f"two-{w}.tsv", w, p) for w in range(2)]
    assert all(pr.wait(timeout=600) == 0 for pr in procs)
    b, _ = summarise(trained_model, two, tmp_path, p, [tmp_path / f"two-{w}.tsv" for w in range(2)])
    cols = ["number", "params_lr", "params_filters", "value"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def test_a_killed_worker_is_continued_and_its_trial_marked_failed(trained_model, tmp_path):
    import optuna

    p = params(n_trials=2, max_epochs=40)
    journal = tmp_path / "study" / "journal.log"
    out = tmp_path / "worker-0.tsv"
    proc = run_worker(trained_model, journal, out, 0, p, start_new_session=True)
    name = hpo.study_name(p, [trained_model["index"], trained_model["train"], trained_model["validation"]])
    running = running_trial(journal, name)  # wait until a trial has reported an epoch
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its trial's process, as a dead cluster job
    proc.wait(timeout=60)
    assert not out.exists()
    again = run_worker(trained_model, journal, out, 0, p)
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log
    assert "left running by a killed run" in log
    table, _ = summarise(trained_model, journal, tmp_path, p, [out])
    interrupted = table[table.error.fillna("").str.startswith("interrupted")]
    assert list(interrupted.number) == [running.number] and (interrupted.state == "FAIL").all()
    assert (table.state == "COMPLETE").sum() == 2  # n_trials done, the interrupted one not counted
    # the interrupted point is evaluated again (here the baseline, trial 0): the same points as a
    # run that was never killed
    study = optuna.load_study(study_name=name, storage=hpo.storage(journal))
    retry = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == running.number]
    assert len(retry) == 1 and retry[0].params == running.params and retry[0].state.name == "COMPLETE"
    assert retry[0].user_attrs.get("baseline") == running.user_attrs.get("baseline")


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp"])
def test_every_sampler_draws_points_inside_the_default_space(sampler):
    import optuna

    from robustmaps import config as rmconfig

    from robustmaps.settings import Hyperband, Searched, from_mapping

    space = rmconfig.load(rmconfig.SCHEMA.parent / "paper.yaml")["hpo"]["space"]  # the schema's default space
    space = {k: from_mapping(Searched, v, k) for k, v in space.items()}
    study = optuna.create_study(direction="maximize", sampler=hpo.make_sampler(sampler, 0),
                                pruner=hpo.make_pruner("hyperband", Hyperband(1, None, 3), 30))
    points = []
    for _ in range(6):
        t = study.ask()
        p = hpo.suggest(t, space, BASELINE)
        points.append(p)
        study.tell(t, p["lr"] * 100 + p["n_blocks"])  # any objective
    for p in points:
        assert set(p) == set(SEARCH_KEYS)
        assert 3 <= p["n_blocks"] <= 7 and p["filters"] in (4, 8, 16, 32) and p["downsampling"] in ("maxpool", "stride")
        assert 1e-5 <= p["lr"] <= 1e-2 and 0 <= p["dropout"] <= 0.7 and isinstance(p["n_blocks"], int)
    assert len({p["lr"] for p in points}) > 1


def test_a_trial_resumes_only_a_checkpoint_of_its_own_point(trained_model, tmp_path):
    """A trial's child process trains with the fingerprint of its point and inputs: a checkpoint
    left at its path by another point (here: another lr, the empty fingerprint trials used to
    write) is ignored and the trial trains from epoch 0; its own checkpoint is resumed."""
    import json

    import numpy as np

    from robustmaps.preprocess import open_store
    from robustmaps.splits import read_split_rows
    from robustmaps.training import TrainConfig, train

    data = trained_model
    settings = hpo.settings_for(BASELINE, params(max_epochs=3)["train"])
    ck = tmp_path / "trial-0.pt"
    store, index = open_store(data["store"], data["index"])
    tr, va = read_split_rows(data["train"], index), read_split_rows(data["validation"], index)
    args = (store, tr.row.to_numpy(), tr.label.to_numpy(), va.row.to_numpy(), va.label.to_numpy())
    train(*args, TrainConfig(**{**settings, "lr": 1e-2}), seed=0, checkpoint=ck, threads=1, stop_after=2)

    def trial_epochs():
        spec = tmp_path / "trial-0.pt.json"
        spec.write_text(json.dumps({**{k: str(data[k]) for k in ("store", "index", "train", "validation")},
                                    "settings": settings, "seed": 0, "checkpoint": str(ck), "device": "cpu",
                                    "threads": 1}))
        out = subprocess.run([sys.executable, "-m", "robustmaps.hpo", str(spec)], capture_output=True, text=True,
                             timeout=600).stdout
        msgs = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
        assert msgs[-1][0] == "done", out
        return [m[1] for m in msgs if m[0] == "epoch"]

    assert trial_epochs() == [0, 1, 2]  # the foreign checkpoint was not resumed
    # its own checkpoint (the run above left it complete) is: nothing is trained again
    assert np.array_equal(trial_epochs(), [])


def test_sigterm_interrupts_a_trial_and_the_rerun_resumes_its_point(trained_model, tmp_path):
    """Slurm's SIGTERM before a time limit (to every process of the job: the worker and its
    trial's process): the trial's process saves its checkpoint at once, the worker marks the
    trial interrupted, enqueues its point again and exits with 143, writing no output; the re-run
    resumes the point from that checkpoint (no epoch trained twice) and ends with the value of a
    run that was never signalled."""
    import optuna

    p = params(n_trials=1, max_epochs=30)
    ref = run_worker(trained_model, tmp_path / "ref" / "journal.log", tmp_path / "ref.tsv", 0, p)
    ref_log = ref.communicate(timeout=900)[0]
    assert ref.returncode == 0, ref_log
    journal = tmp_path / "study" / "journal.log"
    out = tmp_path / "worker-0.tsv"
    proc = run_worker(trained_model, journal, out, 0, p, start_new_session=True)
    name = hpo.study_name(p, [trained_model["index"], trained_model["train"], trained_model["validation"]])
    running_trial(journal, name, epochs=2)  # until the trial has reported two epochs
    os.killpg(proc.pid, signal.SIGTERM)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, log
    assert not out.exists() and "interrupted (SIGTERM" in log
    study = optuna.load_study(study_name=name, storage=hpo.storage(journal))
    (cut,) = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert cut.state.name == "FAIL" and cut.user_attrs["error"].startswith("interrupted: SIGTERM")
    ckpt = journal.parent / "checkpoints" / f"{name}-trial-{cut.number}.pt"
    assert ckpt.exists(), sorted(p.name for p in ckpt.parent.iterdir())
    again = run_worker(trained_model, journal, out, 0, p)
    log = again.communicate(timeout=900)[0]
    assert again.returncode == 0, log
    study = optuna.load_study(study_name=name, storage=hpo.storage(journal))
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == cut.number]
    assert retry.state.name == "COMPLETE" and retry.params == cut.params and retry.user_attrs["origin"] == cut.number
    # resumed: its first reported epoch follows the last one the interrupted trial reported
    assert min(retry.intermediate_values) == max(cut.intermediate_values) + 1, (retry.intermediate_values,
                                                                                 cut.intermediate_values)
    assert not ckpt.exists()  # removed once the point finished
    reference = optuna.load_study(study_name=name, storage=hpo.storage(tmp_path / "ref" / "journal.log"))
    (done,) = [t for t in reference.get_trials() if t.state.name == "COMPLETE"]
    assert retry.value == done.value and retry.user_attrs["best_epoch"] == done.user_attrs["best_epoch"]


def test_half_written_journal_records_are_repaired_or_named(trained_model, tmp_path):
    """A worker killed (or a disk full) in the middle of an append leaves half a record: at the end
    of the journal (optuna's readers skip it until another worker appends behind it, and then
    every reader fails on the joined line) or already joined to the next record. The next worker
    drops the half under the journal's lock and the search completes; damage that is not a cut
    append stops the worker with one line naming the journal and the line."""
    p = params(n_trials=1, max_epochs=2)
    journal = tmp_path / "study" / "journal.log"
    first = run_worker(trained_model, journal, tmp_path / "w0.tsv", 0, p)
    assert first.wait(timeout=600) == 0, first.stdout.read()
    whole = journal.read_bytes()
    records = whole.splitlines()
    # a cut record joined to a complete one in the middle, and a cut last record
    journal.write_bytes(b"\n".join(records[:3]) + b"\n" + records[3][:25] + records[3] + b"\n"
                        + b"\n".join(records[4:]) + b"\n" + records[-1][:40])
    again = run_worker(trained_model, journal, tmp_path / "w1.tsv", 0, params(n_trials=2, max_epochs=2))
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log
    assert "line 4: a half-written record (25 bytes) before a complete one" in log
    assert "the last record was cut after 40 bytes" in log
    assert journal.read_bytes().startswith(whole)  # the records before the cut, as they were
    table, _ = summarise(trained_model, journal, tmp_path, params(n_trials=2, max_epochs=2), [tmp_path / "w1.tsv"])
    assert (table.state == "COMPLETE").sum() == 2
    journal.write_bytes(whole.replace(records[2], b"not a record at all", 1))
    bad = run_worker(trained_model, journal, tmp_path / "w2.tsv", 0, p)
    log = bad.communicate(timeout=600)[0]
    assert bad.returncode != 0
    assert f"{journal}: line 3 is not a journal record and is not a cut append either" in log


def test_lowering_the_workers_after_a_kill_releases_the_trials_of_the_workers_gone(trained_model, tmp_path):
    """hpo.workers lowered from 4 to 2 after a kill: no job of worker 3 will come back, so worker 0
    marks the trial worker 3 left running as interrupted and evaluates its point again; the search
    still completes n_trials."""
    import optuna

    p = params(n_trials=2, max_epochs=40)
    journal = tmp_path / "study" / "journal.log"
    proc = run_worker(trained_model, journal, tmp_path / "worker-3.tsv", 3, p, workers=4, start_new_session=True)
    name = hpo.study_name(p, [trained_model["index"], trained_model["train"], trained_model["validation"]])
    first = running_trial(journal, name)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    again = run_worker(trained_model, journal, tmp_path / "worker-0.tsv", 0, p, workers=2)
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log
    assert f"trials [{first.number}] were left running" in log
    study = optuna.load_study(study_name=name, storage=hpo.storage(journal))
    (gone,) = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert gone.user_attrs["error"] == "interrupted: worker 3 no longer exists (hpo.workers is 2); re-run"
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == gone.number]
    assert retry.state.name == "COMPLETE" and retry.params == gone.params and retry.user_attrs["worker"] == 0
    assert sum(t.state.name == "COMPLETE" for t in study.get_trials()) == 2
