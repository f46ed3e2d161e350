"""Ablation sweeps over jaxgen configs, the comparison tables built from their runs, and a report.

* :mod:`experiments.spec`: a sweep is a list of :class:`~experiments.spec.Run` (config file,
  config arguments, ``--config.<key>`` overrides), loaded from ``experiments/ablations/<name>.py``.
* :mod:`experiments.sweep`: the sweep's command line; it runs a sweep through ``launch.py``
  (:mod:`experiments.local`) or writes a SLURM array script (:mod:`experiments.slurm`).
  :mod:`experiments.commands` builds each run's launcher commands and checks its overrides,
  :mod:`experiments.run_state` judges from the files which stages are still to do.
* :mod:`experiments.rundir`: reads run directories (checkpoint steps, eval files, metrics).
* :mod:`experiments.tables`: the ten comparison tables as Markdown and CSV (the command line
  and the writer): :mod:`experiments.table_defs` defines them, :mod:`experiments.run_values`
  reads their cells from a run (the family's own text from its ``describe``),
  :mod:`experiments.cells` formats them.
* :mod:`experiments.report`: a static HTML report with the tables, samples and curves.

See ``experiments/README.md``.
"""
