"""The Spleeter reference side, run with the spleeter venv's python (spleeter_env.sh),
never imported by StemBridge or by the tests' own process.

    python spleeter_reference.py JOBS.json

JOBS.json holds ``{"models": [...], "separations": [...]}``, done in that order in one
process (TensorFlow's import is most of a small job's time):

* a model ``{"config": "4stems", "folder": F, "seed": 0, "filters": [4, 8, 8, 8, 8, 8],
  "channels": 2}``: spleeter's own predict graph for the configuration (``filters``
  replaces ``model.params.conv_n_filters``, ``channels`` ``n_channels``; both optional),
  every variable filled with seeded random values (positive moving variances), saved with
  ``tf.compat.v1.train.Saver`` as the official release folders are saved:
  ``checkpoint``, ``model.index``, ``model.data-00000-of-00001``, ``model.meta``;
* a separation ``{"config": ..., "folder": F, "filters": ..., "input": IN.npy,
  "output": OUT.npz}``: spleeter's ``Separator.separate`` on the ``(frames, channels)``
  float32 waveform in IN, the stems saved in OUT by instrument name.

Prints one JSON line per separation: ``{"output": OUT, "seconds": S}`` (the separation
alone, TensorFlow's graph and session included, as ``spleeter separate`` pays them).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from spleeter.utils.configuration import load_configuration


def _params(job: dict) -> dict:
    params = load_configuration(f"spleeter:{job['config']}")
    params["model_dir"] = os.path.abspath(job["folder"])
    if job.get("filters"):
        params["model"]["params"]["conv_n_filters"] = [int(n) for n in job["filters"]]
    if job.get("channels"):
        params["n_channels"] = int(job["channels"])
    return params


def _random_value(name: str, shape: list, rng: np.random.Generator) -> np.ndarray | None:
    if name.endswith("moving_variance"):
        return rng.uniform(0.5, 2.0, shape)
    if name.endswith("gamma"):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith(("beta", "bias", "moving_mean")):
        return rng.normal(0.0, 0.1, shape)
    if name.endswith("kernel"):
        # He-uniform over the fan-in, so activations neither vanish nor explode.
        fan_in = shape[0] * shape[1] * (shape[3] if "transpose" in name else shape[2])
        limit = np.sqrt(6.0 / max(fan_in, 1))
        return rng.uniform(-limit, limit, shape)
    return None


def write(job: dict) -> None:
    from spleeter.model import EstimatorSpecBuilder, InputProviderFactory

    params = _params(job)
    rng = np.random.default_rng(int(job.get("seed", 0)))
    with tf.Graph().as_default():
        features = InputProviderFactory.get(params).get_input_dict_placeholders()
        _ = EstimatorSpecBuilder(features, params).outputs
        tf.compat.v1.train.get_or_create_global_step()
        # One assignment run for all variables (a session run per variable costs a graph
        # pruning each: minutes for spleeter's ~300 variables).
        feeds, assigns = {}, []
        for variable in tf.compat.v1.global_variables():
            value = _random_value(variable.op.name, variable.shape.as_list(), rng)
            if value is not None:
                slot = tf.compat.v1.placeholder(variable.dtype.base_dtype, variable.shape)
                assigns.append(variable.assign(slot))
                feeds[slot] = value.astype(variable.dtype.as_numpy_dtype)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(tf.group(*assigns), feeds)
            folder = os.path.abspath(job["folder"])
            os.makedirs(folder, exist_ok=True)
            saver = tf.compat.v1.train.Saver(save_relative_paths=True)
            saver.save(session, os.path.join(folder, "model"))


def separate(job: dict) -> float:
    from spleeter.separator import Separator

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(_params(job), file)
    try:
        waveform = np.load(job["input"])
        started = time.perf_counter()
        stems = Separator(file.name, multiprocess=False).separate(waveform)
        seconds = time.perf_counter() - started
    finally:
        os.unlink(file.name)
    np.savez(job["output"], **{name: np.asarray(data) for name, data in stems.items()})
    return seconds


def main(path: str) -> None:
    with open(path, encoding="utf-8") as file:
        jobs = json.load(file)
    tf.compat.v1.disable_eager_execution()
    for job in jobs.get("models", []):
        write(job)
    for job in jobs.get("separations", []):
        seconds = separate(job)
        print(json.dumps({"output": job["output"], "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
