"""Ablation sweeps over jaxgen configs, the comparison tables built from their runs, and a report.

* :mod:`experiments.spec`: a sweep is a list of :class:`~experiments.spec.Run` (config file,
  config arguments, ``--config.<key>`` overrides), loaded from ``experiments/ablations/<name>.py``.
* :mod:`experiments.sweep`: runs a sweep through ``launch.py`` (or writes a SLURM array script).
* :mod:`experiments.rundir`: reads run directories (checkpoint steps, eval files, metrics).
* :mod:`experiments.tables`: the ten comparison tables as Markdown and CSV.
* :mod:`experiments.report`: a static HTML report with the tables, samples and curves.

See ``experiments/README.md``.
"""
