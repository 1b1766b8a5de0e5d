"""Rule entries of the report stage (rules/report.smk): the provenance record and the
pseudonymised copies of the tables the report shows."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..io import InputError, atomic_path
from ..privacy import pseudonymise_text, read_key
from ..provenance import write_provenance

log = logging.getLogger(__name__)


def pseudonymise_file(src: str | os.PathLike, dst: str | os.PathLike, key_file: str | os.PathLike) -> None:
    """Rule entry: the pseudonymised copy ``dst`` of the report table ``src`` (TSV or JSON text)."""
    key = read_key(key_file)
    try:
        text = Path(src).read_text()
    except UnicodeDecodeError:
        raise InputError(f"{src}: not a text table; only TSV and JSON tables are pseudonymised") from None
    with atomic_path(dst) as tmp:
        tmp.write_text(pseudonymise_text(text, key))


def provenance(targets, out_json, record, *, commit: str, config: dict, log_file) -> dict:
    """Rule entry (rules/report.smk, a ``run:`` block: ``record`` reads Snakemake's own records of a
    file's job): ``results/provenance.json`` (robustmaps.provenance) and its log line."""
    doc = write_provenance(out_json, targets, record, commit, config)
    with open(log_file, "w") as fh:
        print(f"commit {doc['workflow']['commit']}; {len(doc['rules'])} rules:", *doc["rules"], file=fh)
    return doc
