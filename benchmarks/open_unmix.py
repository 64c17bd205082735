"""Open-Unmix on CPU: StemBridge vs the openunmix package's Separator, same run.

    flock /tmp/bench.lock python benchmarks/open_unmix.py [--seconds 60] [--hidden 512]
        [--iterations 1] [--repeat N]

The model: umxhq's four targets as random-init networks of the released size (hidden
512, three bidirectional LSTM layers, 2049 bins cut at 1487), written as its official
``<target>-<hash>.pth`` files. The clip: stereo 44.1 kHz, 24-bit, tones and noise.

* openunmix 1.3.0 (installed with ``--no-deps``: tests/references/openunmix.txt): a
  child process builds ``openunmix.model.Separator`` from the same files (``niter`` as
  given, its default ``wiener_win_len`` of 300), reads the clip with soundfile,
  separates it whole and writes float WAV stems. torchaudio, which it imports and this
  path never calls, is an empty stand-in module.
* StemBridge: ``stembridge separate clip.wav --model umxhq --bit-depth 32
  --no-exact-sum --no-pictures`` (the raw stems; 30 s chunks, so a 60 s clip is three).

Each side runs in its own process; with ``--repeat N`` they take turns and the fastest
run of each counts. Reported: wall time, CPU time, peak RSS (``ru_maxrss`` from
``wait4``), the ratio and how far StemBridge's stems are from the reference's (SDR of
the difference, dB; a clip longer than a chunk is chunked, so they differ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import write_clip

from bridge.models.catalog import MODELS
from bridge.models.families.openunmix import STFTS, UnmixNetwork

#: umxhq's cut-off (openunmix's bandwidth_to_max_bin for 16 kHz at 44.1 kHz, n_fft 4096).
MAX_BIN = 1487

#: The reference side, run as ``python -c REFERENCE models clip out iterations``.
REFERENCE = """
import sys, types
sys.modules["torchaudio"] = types.ModuleType("torchaudio")
from pathlib import Path
import numpy as np, soundfile as sf, torch
from openunmix.model import OpenUnmix, Separator
models, clip, out, iterations = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
targets = {}
for name in ("vocals", "drums", "bass", "other"):
    state = torch.load(next(models.glob(name + "-*.pth")), weights_only=True)
    net = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=state["fc1.weight"].shape[0],
                    max_bin=state["input_mean"].shape[0])
    net.load_state_dict(state)
    targets[name] = net
separator = Separator(targets, niter=int(iterations), n_fft=4096, n_hop=1024, nb_channels=2)
separator.freeze()
audio, rate = sf.read(clip, dtype="float32", always_2d=True)
with torch.no_grad():
    stems = separator(torch.from_numpy(audio.T.copy())[None])[0].numpy()
out.mkdir(parents=True, exist_ok=True)
for name, stem in zip(targets, stems):
    sf.write(str(out / (name + ".wav")), stem.T, rate, subtype="FLOAT")
"""


def write_models(folder: Path, *, hidden: int) -> Path:
    """umxhq's targets, random init, under their official file names."""
    folder.mkdir(parents=True, exist_ok=True)
    stft = STFTS["umxhq"]
    torch.manual_seed(0)
    for file in MODELS["umxhq"].files:
        network = UnmixNetwork(bins=stft.bins, max_bin=MAX_BIN, channels=2, hidden=hidden, layers=3)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.normal_(0.0, 0.05)
        torch.save(network.state_dict(), folder / file.name)
    return folder


def measured(command: list[str], env: dict[str, str]) -> dict:
    """Wall and CPU seconds and peak RSS of ``python command...``."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, *command], env={**os.environ, **env}, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert child.stderr is not None
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{error[-3000:]}")
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((reference - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(error, 1e-30)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hidden", type=int, default=512, help="512 is umxhq's")
    parser.add_argument("--iterations", type=int, default=1, help="Wiener iterations")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="umx-bench-") as folder:
        work = Path(folder)
        models = write_models(work / "models", hidden=args.hidden)
        env = {"STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"}
        runs: dict[str, list[dict]] = {"openunmix": [], "stembridge": []}
        for turn in range(args.repeat):
            # Each turn a clip of its own: StemBridge would reuse the result of the same audio.
            clip = write_clip(work / f"clip{turn}.wav", args.seconds, seed=turn)
            ref_out, our_out = work / f"ref{turn}", work / f"ours{turn}"
            runs["openunmix"].append(
                measured(
                    ["-c", REFERENCE, str(models), str(clip), str(ref_out), str(args.iterations)],
                    env,
                )
            )
            command = ["-m", "bridge", "separate", str(clip), "--model", "umxhq"]
            command += ["-o", str(our_out), "--bit-depth", "32", "--no-exact-sum"]
            command += ["--no-pictures", "--wiener-iterations", str(args.iterations)]
            runs["stembridge"].append(measured(command, env))
        agreement = {
            name: round(
                sdr_db(
                    sf.read(str(ref_out / f"{name}.wav"), dtype="float64")[0],
                    sf.read(str(our_out / clip.stem / f"{name}.wav"), dtype="float64")[0],
                ),
                1,
            )
            for name in MODELS["umxhq"].sources
        }
    best = {side: min(results, key=lambda r: r["wall_seconds"]) for side, results in runs.items()}
    report = {
        "seconds": args.seconds,
        "hidden": args.hidden,
        "wiener_iterations": args.iterations,
        "cpus": os.cpu_count(),
        **best,
        "wall_ratio_openunmix_over_stembridge": round(
            best["openunmix"]["wall_seconds"] / best["stembridge"]["wall_seconds"], 2
        ),
        "stems_sdr_vs_reference_db": agreement,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
