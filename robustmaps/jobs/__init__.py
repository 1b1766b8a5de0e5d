"""Rule entries, one module per rules/<stage>.smk (the top layer): the only code that reads a
job's input files and writes its outputs, each entry a composition of the layers below.
``scripts/<rule>.py`` is one call into an entry here."""
