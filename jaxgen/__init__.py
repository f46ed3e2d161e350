"""jaxgen: generative image models in JAX/Flax behind one launcher."""

__version__ = "0.1.0"
