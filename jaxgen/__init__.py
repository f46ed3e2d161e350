"""jaxgen: generative image models in JAX/Flax behind one launcher.

``jaxgen.train(config, workdir)`` and ``jaxgen.load(workdir)`` are the Python API
(:mod:`jaxgen.api`); they are imported on first use, so that ``import jaxgen`` stays light
for the launcher.
"""

__version__ = "0.1.0"
__all__ = ["load", "train"]


def __getattr__(name: str):
    if name in __all__:
        from jaxgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'jaxgen' has no attribute {name!r}")
