"""The pipeline: one job from input file to published stems, the same for every front end.

Stages, each in a module named for it: :mod:`~bridge.pipeline.prepare` the input,
:mod:`~bridge.pipeline.analyse` it, :mod:`~bridge.pipeline.separate` it with
:mod:`~bridge.pipeline.postprocess` behind, :mod:`~bridge.pipeline.publish` the stems;
the stem folder is reserved first (:mod:`~bridge.pipeline.folders`). The entry point
is :func:`bridge.pipeline.run.run_job`; what a job asks for is a
:class:`~bridge.pipeline.spec.JobSpec`.
"""
