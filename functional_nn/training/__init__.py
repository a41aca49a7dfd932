"""Training: the lecture's gradient descent as an optax transformation, and ``fit``, which
runs any optax optimizer as compiled chunks of steps (``_loop.py``), on one device or a mesh.

Imports ``lecture``, ``_compile`` and ``_util``.
"""

from functional_nn.training._loop import weight_penalty
from functional_nn.training._train import History, fit, gradient_descent

__all__ = [
    "History",
    "fit",
    "gradient_descent",
    "weight_penalty",
]
