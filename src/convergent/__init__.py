"""convergent: converged vision and language pre-training.

Importing the package is cheap: torch-dependent modules are imported only when used.
"""

__version__ = "0.1.0"
