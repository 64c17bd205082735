"""The start of a scoring process (:func:`bridge.evaluate.run.evaluate` with ``scorers``).

Kept free of NumPy: the thread counts below are read once, when NumPy's BLAS loads, so
they must be set before anything imports it in the new process.
"""

from __future__ import annotations

import os

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def start(threads: int) -> None:
    """Give this process's BLAS ``threads`` threads: each scoring process gets its share
    of the cores, instead of every one starting a thread per core."""
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
