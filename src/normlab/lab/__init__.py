"""The lab: which normalization for which batch size and data (``normlab sweep`` / ``report``).

Installed with the ``lab`` extra (numpy, scikit-learn, matplotlib, tqdm, mnist1d); the core
package never imports it. Modules: ``data`` and ``sampling`` (data sets and batch orders),
``models`` (the networks, with the norm as their parameter), ``runner`` (one deterministic run),
``sweep`` (the grid, in parallel and resumable), ``store`` (the run directory's files),
``summary`` (the statistics of the records), ``report`` and ``plots`` (tables, figures,
``report.md``); ``config`` (the settings of a run and of a sweep, declared once).
"""
