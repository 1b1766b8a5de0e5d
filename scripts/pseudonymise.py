"""Rules pseudonymise_<table>: see robustmaps.jobs.report.pseudonymise_file."""
from robustmaps.jobs.report import pseudonymise_file
from robustmaps.runner import script

with script(snakemake):
    pseudonymise_file(snakemake.input.table, snakemake.output.reported_copy, snakemake.input.key)
