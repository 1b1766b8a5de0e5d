"""What every leaf script shares: logging into the rule's log, thread limits, clean failures."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from .io import InputError


@contextlib.contextmanager
def script(smk) -> Iterator[logging.Logger]:
    """Context for a Snakemake ``script:``: log to ``log[0]`` (and stderr), cap threads, and turn
    an :class:`InputError` into one ``ERROR:`` line and exit status 1 instead of a traceback."""
    threads = str(max(1, int(getattr(smk, "threads", 1))))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads
    handlers = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(str(smk.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format=f"%(asctime)s {smk.rule}: %(message)s", datefmt="%H:%M:%S")
    logger = logging.getLogger(f"robustmaps.{smk.rule}")
    if "torch" in sys.modules:  # otherwise torch reads OMP_NUM_THREADS when first imported
        sys.modules["torch"].set_num_threads(int(threads))
    try:
        yield logger
    except InputError as exc:
        logger.error("ERROR: %s", exc)
        logging.shutdown()
        sys.exit(1)
    logging.shutdown()


def or_exit(fn, *args, **kwargs):
    """Call ``fn``; on bad input print one ``ERROR:`` line and exit 1 (for Snakefile-time checks,
    where an exception would add Snakemake's traceback to the message)."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
