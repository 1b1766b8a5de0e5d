"""What every stage shares (rules/common.smk): the config's validation with the checks that read
the atlas or build the network, which only the main Snakemake process runs (cluster jobs re-read
the Snakefile with ``deep=False``)."""

from __future__ import annotations

from ..config import ConfigError, fail
from ..config import validate as validate_schema
from ..grid import working_grid
from ..io import InputError


def validate(config: dict, deep: bool = True) -> dict:
    """robustmaps.config.validate, then with ``deep`` the atlas's ROI names of every synthetic
    cohort and the network built on the working grid."""
    validate_schema(config)
    if deep:
        check_atrophy_rois(config)
        check_architecture(config)
    return config


def check_atrophy_rois(config: dict) -> None:
    """Every planted ROI of a synthetic cohort is a name of the atlas's label table."""
    # imported here, not at the top: robustmaps.atlas imports nilearn (a second), and every
    # cluster job imports this module to re-read the Snakefile without running this check
    from ..atlas import aal2_files, load_labels, roi_index

    for name, cohort in config["data"]["cohorts"].items():
        if cohort["source"] != "synthetic":
            continue
        try:
            roi_index(load_labels(config["atlas"]["labels"] or aal2_files()[1]),
                      [r["name"] for r in cohort["synthetic"]["atrophy"]["rois"]],
                      where=f"config: data.cohorts.{name}.synthetic.atrophy.rois")
        except ConfigError:
            raise
        except InputError as exc:
            raise ConfigError(str(exc)) from None


def check_architecture(config: dict) -> None:
    """Build the configured network on the working grid (meta device: no memory, no time), so
    that an unknown name, a bad keyword or a grid too small for it stops before any job runs."""
    # imported here, not at the top: cluster jobs import this module to re-read the Snakefile and
    # never build the network; torch would add seconds to each of them
    import torch

    from ..models import build_model

    spec = config["train"]["architecture"]
    try:
        with torch.device("meta"):
            build_model(spec, working_grid(config).shape)
    except (ValueError, TypeError, RuntimeError) as exc:
        fail("train.architecture", f"{spec['name']}: {exc}")
