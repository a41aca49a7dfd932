"""Data: the datasets the library ships or generates (``load_dataset``, ``SHAPES``), and
atomic ``.npz`` checkpoints of a network and its parameters (``save``, ``load``).

Imports ``lecture`` (a checkpoint holds a ``Network``) and ``_util``.
"""

from functional_nn.data._checkpoints import load, save
from functional_nn.data._datasets import DATASETS, SHAPES, Dataset, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "SHAPES",
    "load",
    "load_dataset",
    "save",
]
