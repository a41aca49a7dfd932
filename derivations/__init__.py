"""SymPy derivations of every derivative the lecture uses, proved and lambdified to JAX.

One module per topic, each reading like its slide: ``activations``, ``losses``, ``logistic``,
``chain_rule``, ``collapse``, ``networks``; ``method`` turns the closed forms of whole small
networks into a gradient method with the library's common signature, ``sympy_gradient``.
``functional_nn`` never imports this package; this package imports ``functional_nn`` only to
read a ``Network``'s architecture.
"""

from derivations.method import MAX_PARAMS, sympy_gradient

__all__ = ["MAX_PARAMS", "sympy_gradient"]
