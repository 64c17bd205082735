"""``stembridge evaluate``: separation quality measured on a dataset, model against model.

:mod:`~bridge.evaluate.dataset` finds the tracks and reads their references,
:mod:`~bridge.evaluate.candidates` says what is evaluated and separates through the job
pipeline, :mod:`~bridge.evaluate.scoring` and :mod:`~bridge.evaluate.metrics` score one
track, :mod:`~bridge.evaluate.run` runs the tracks in order with a cache, and
:mod:`~bridge.evaluate.report` writes what was found. Nothing here imports torch; the
separation's models are loaded by the pipeline when a track is separated.
"""
