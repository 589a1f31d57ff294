"""Reports: lifecycle footprints, run comparisons, what-if estimates, and scheduled report files.

Nothing heavy at import: pandas and matplotlib load inside the modules that build tables and
plots (:mod:`.data`, :mod:`.lifecycle`, :mod:`.compare`, :mod:`.plots`, :mod:`.render`). The
daemon imports only :mod:`.schedule` and :mod:`.rollup` (stdlib), and runs each scheduled
report in a child process, so pandas never enters it.
"""
