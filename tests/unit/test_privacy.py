"""Report pseudonyms (robustmaps.privacy): keyed, stable, complete on the report's tables."""

from __future__ import annotations

import hashlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from robustmaps.io import InputError
from robustmaps.privacy import new_key, pseudonym, pseudonymise_text, read_key
from robustmaps.jobs.report import pseudonymise_file

KEY = b"0123456789abcdef0123456789abcdef"
QC = ("participant_id\tsession_id\tdiagnosis\tstatus\tmax_value\tpath\n"
      "sub-ADNI002S0295\tses-M000\tAD\tpass\t1\t/home/jdoe/ADNI/caps/subjects/sub-ADNI002S0295/ses-M000/t1/"
      "sub-ADNI002S0295_ses-M000_T1w_probability.nii.gz\n"
      "sub-ADNI941S1195\tses-M012\tCN/MCI\tfail: empty\t0.5\tcaps/subjects/sub-ADNI941S1195/ses-M012/x.nii.gz\n")


def test_a_pseudonym_is_a_keyed_hash_stable_for_its_key():
    a = pseudonym("sub-ADNI002S0295", KEY)
    assert re.fullmatch(r"sub-[0-9a-f]{12}", a)
    assert pseudonym("sub-ADNI002S0295", KEY) == a  # stable
    assert pseudonym("sub-ADNI002S0296", KEY) != a  # the next enumerable id
    assert pseudonym("sub-ADNI002S0295", KEY[::-1]) != a  # another key, another pseudonym
    # not the plain hash that anyone could compute over every possible ADNI id
    assert a[4:] not in hashlib.sha256(b"sub-ADNI002S0295").hexdigest()


def test_tables_lose_every_id_and_folder_and_keep_their_values():
    out = pseudonymise_text(QC, KEY)
    assert "ADNI002S0295" not in out and "ADNI941S1195" not in out and "jdoe" not in out
    table = pd.read_csv(io.StringIO(out), sep="\t")
    real = pd.read_csv(io.StringIO(QC), sep="\t")
    assert table.shape == real.shape and list(table.columns) == list(real.columns)
    assert list(table.participant_id) == [pseudonym(p, KEY) for p in real.participant_id]
    # the file name stays (session, modality), with the pseudonym inside it; the folders go
    assert table.path[0] == f"{pseudonym('sub-ADNI002S0295', KEY)}_ses-M000_T1w_probability.nii.gz"
    assert table.path[1] == "x.nii.gz"
    # what is not an id or a path is kept: values, sessions, a label with a slash, a reason
    for col in ("session_id", "diagnosis", "status"):
        assert list(table[col]) == list(real[col])
    np.testing.assert_array_equal(table.max_value, real.max_value)


def test_json_paths_become_file_names_and_stay_valid_json():
    doc = {"config": {"data": {"cohorts": {"main": {"caps": {"directory": "/data/site/ADNI/caps",
                                                             "sessions": "./tables/sessions.tsv"}}}},
                      "split": {"import_dir": "clinicadl/split"}},
           "note": "sub-ADNI002S0295 excluded", "labels": {"CN": 0, "AD": 1}}
    out = json.loads(pseudonymise_text(json.dumps(doc, indent=1), KEY))
    caps = out["config"]["data"]["cohorts"]["main"]["caps"]
    assert caps == {"directory": "caps", "sessions": "sessions.tsv"}
    assert out["config"]["split"]["import_dir"] == "clinicadl/split"  # relative, no data suffix: not a path here
    assert out["note"] == f"{pseudonym('sub-ADNI002S0295', KEY)} excluded" and out["labels"] == doc["labels"]


def test_the_key_is_made_once_private_and_checked_when_read(tmp_path):
    path = tmp_path / "private" / "pseudonym.key"
    assert new_key(path) is True
    key = read_key(path)
    assert re.fullmatch(rb"[0-9a-f]{64}", key) and path.stat().st_mode & 0o777 == 0o600
    assert new_key(path) is False and read_key(path) == key  # never replaced
    with pytest.raises(InputError, match=r"nothere\.key: pseudonym key file not found"):
        read_key(tmp_path / "nothere.key")
    (tmp_path / "short.key").write_text("secret\n")
    with pytest.raises(InputError, match=r"short\.key: pseudonym key too short \(6 characters"):
        read_key(tmp_path / "short.key")


def test_a_file_copy_is_written_whole_or_not_at_all(tmp_path):
    (tmp_path / "k").write_text(KEY.decode())
    (tmp_path / "qc.tsv").write_text(QC)
    pseudonymise_file(tmp_path / "qc.tsv", tmp_path / "out" / "qc.tsv", tmp_path / "k")
    assert (tmp_path / "out" / "qc.tsv").read_text() == pseudonymise_text(QC, KEY)
    with pytest.raises(InputError, match="pseudonym key file not found"):
        pseudonymise_file(tmp_path / "qc.tsv", tmp_path / "out" / "again.tsv", tmp_path / "missing")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["qc.tsv"]


def test_session_matrices_number_subjects_and_never_name_them():
    from robustmaps.roi import ID_COLUMNS
    from robustmaps.similarity import similarity_matrices

    rows = []
    for p, s in [("sub-ADNI941S1195", "ses-M000"), ("sub-ADNI002S0295", "ses-M012"), ("sub-ADNI002S0295", "ses-M000")]:
        rows.append({**dict.fromkeys(ID_COLUMNS, ""), "kind": "session", "method": "mask", "cohort": "main",
                     "target": "AD", "fold": 0, "seed": 0, "participant_id": p, "session_id": s,
                     "r1": 1.0, "r2": 2.0 if p.endswith("5") else 0.5})
    matrices = similarity_matrices(pd.DataFrame(rows), ["r1", "r2"])
    (name, m), = [(k, v) for k, v in matrices.items() if k.startswith("session masks")]
    assert list(m.index) == ["subject 1 M000", "subject 1 M012", "subject 2 M000"]  # sorted by id
    assert m.loc["subject 1 M000", "subject 1 M012"] == pytest.approx(1.0)
