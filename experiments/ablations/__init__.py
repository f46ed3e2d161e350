"""Shipped sweeps: each module's ``get_sweep(arg=None)`` returns a list of
:class:`experiments.spec.Run`; run one with ``python -m experiments.sweep <file>``."""
