"""RoFormer and MDX-Net on CPU: StemBridge vs python-audio-separator's CLI, same run.

    python benchmarks/families.py compare [--seconds 60] [--size small|released|tiny]
        [--models roformer mdx_net] [--repeat N]
    python benchmarks/families.py memory [--minutes 1 10] [--size tiny|small|released]
        [--models roformer mdx_net] [--skip-separator]

The models are randomly initialised networks written in their official forms under the
names UVR gives them (``family_models.py``): a BS-RoFormer in the viperx model's
configuration (``model_bs_roformer_ep_317_sdr_12.9755``) and an MDX-Net of Inst_HQ_3's
shape (``UVR-MDX-NET-Inst_HQ_3.onnx``). ``--size`` picks the network: ``released``
(the RoFormer's 160 M parameters take about two minutes a chunk on a 2-core CPU),
``small`` or ``tiny``; STFT, bands, spectrum and chunks are the released model's in
every size, so the audio each side holds is as with the released model.

``compare``: a stereo 44.1 kHz float WAV (tones and noise) separated by each program in
its own process, the same model file, the same clip, one after the other:

* python-audio-separator: its CLI (``audio-separator clip.wav -m NAME --model_file_dir
  DIR --output_format WAV --use_soundfile``: float WAV stems like StemBridge's, and its
  chunking left as it is: for the RoFormer the yaml's ``dim_t`` and ``num_overlap``, for
  MDX-Net 256 frames and overlap 0.25). For MDX-Net the CLI runs with an empty module
  standing in for ``onnx2torch``: the CLI imports it (and it torchvision, which does not
  load against this torch); only a segment other than the model's would use it.
* StemBridge: ``stembridge separate clip.wav --model FILE --bit-depth 32
  --no-exact-sum --no-pictures`` (the model's raw stems, as python-audio-separator
  writes them; its chunking left as it is too, which is the same).

With ``--repeat N`` the sides take turns N times and the fastest run of each counts.

Reported: wall time of each process (start, imports, model load, separation, writing),
its CPU time (user + system: less disturbed than wall time by other work on the machine),
the separation alone (python-audio-separator: its log's "Starting separation" to
"Separation duration"; StemBridge: the manifest's ``total_seconds``, the job after the
model is loaded), the ratio python-audio-separator / StemBridge, the peak RSS of each
process (``ru_maxrss`` from ``wait4``, taken by a small launcher: see ``_LAUNCHER``) and
the largest difference between their stems.
python-audio-separator's MDX separator multiplies its output by the mix's peak (its
``separate``: ``self.demix(mix) * peak``; the mix itself is only scaled when its peak is
over 0.9, this clip's is 0.6), so for MDX-Net its primary stem is divided by that peak
(and the other stem, the mix minus ``compensate`` times the primary, taken back the same
way) before the stems are compared; the raw difference is reported too.

``memory``: StemBridge's peak RSS and wall time for 1 and 10 minutes of 16-bit audio
through ``stembridge separate`` at its defaults (exact-sum),
with the growth from the shortest to the longest; python-audio-separator's CLI on the
same files unless ``--skip-separator``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf
from common import machine, write_clip
from family_models import INST_HQ_3, MDX_NET, ROFORMER, write_bs_roformer, write_mdx_net

FAMILIES = ("roformer", "mdx_net")
#: python-audio-separator's CLI, as its console script runs it, with ``onnx2torch``
#: standing in (see the module docstring).
_CLI_WITHOUT_ONNX2TORCH = (
    "import sys, types\n"
    "sys.modules['onnx2torch'] = types.ModuleType('onnx2torch')\n"
    "from audio_separator.utils.cli import main\n"
    "sys.exit(main())\n"
)
#: The peak python-audio-separator scales the mix and its stems down to (``--normalization``).
SEPARATOR_PEAK = 0.9


#: Runs ``argv[2:]`` in a child it forks and writes that child's ``ru_maxrss`` (KiB) and
#: CPU seconds (user + system) to ``argv[1]``. A child of this script itself would not
#: do: Linux counts in ``ru_maxrss`` the memory of the process it was forked from
#: (``dup_mm`` starts the high-water mark at the copy's size, ``exec`` keeps it), and this
#: script holds the networks it wrote. This launcher is a few MB.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvpe(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "cpu = usage.ru_utime + usage.ru_stime\n"
    "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {cpu}')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


@dataclass(frozen=True)
class Run:
    """One child process: wall and CPU time, peak RSS, what it printed."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    stdout: str
    stderr: str


def run(command: list[str], work: Path, env: dict[str, str]) -> Run:
    """Run ``command`` and measure it (its output goes to files: nothing blocks)."""
    out, err, rss = work / "stdout.txt", work / "stderr.txt", work / "maxrss.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        started = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-c", _LAUNCHER, str(rss), *command],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **env},
        )
        wall = time.perf_counter() - started
    maxrss, cpu = rss.read_text().split()
    result = Run(wall, float(cpu), int(maxrss) * 1024, out.read_text(), err.read_text())
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def write_model(family: str, folder: Path, size: str, audio: np.ndarray) -> Path:
    """The family's model file in ``folder`` (python-audio-separator's model folder)."""
    if family == "roformer":
        return write_bs_roformer(folder, size, seed=1)
    return write_mdx_net(folder, size, audio, seed=2)


def separator_side(model: Path, clip: Path, out: Path, *, read: bool = True) -> dict:
    """python-audio-separator's CLI on ``clip`` with the file ``model`` (by its name)."""
    if model.suffix == ".onnx":
        program = [sys.executable, "-c", _CLI_WITHOUT_ONNX2TORCH]
    else:
        program = [sys.executable, str(Path(sys.executable).parent / "audio-separator")]
    command = [
        *program,
        str(clip),
        "-m",
        model.name,
        "--model_file_dir",
        str(model.parent),
        "--output_dir",
        str(out),
        "--output_format",
        "WAV",
        "--use_soundfile",
    ]
    out.mkdir(parents=True)
    measured = run(command, out, env={})
    stamps = _log_stamps(measured.stderr)
    stems = {}
    for path in out.glob(f"{clip.stem}_(*)_*.wav") if read else ():
        name = path.name[len(clip.stem) + 2 :].split(")_", 1)[0].lower()
        stems[name] = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    return {
        "wall_seconds": measured.wall_seconds,
        "cpu_seconds": measured.cpu_seconds,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "load_seconds": stamps["Load model duration"] - stamps["Loading model"],
        "separation_seconds": stamps["Separation duration"] - stamps["Starting separation"],
        "stems": stems,
    }


def _log_stamps(log: str) -> dict[str, float]:
    """When python-audio-separator logged each step, in seconds (its lines carry ms)."""
    steps = ("Loading model", "Load model duration", "Starting separation", "Separation duration")
    stamps: dict[str, float] = {}
    for line in log.splitlines():
        for step in steps:
            if f" - {step}" in line and step not in stamps:
                when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                stamps[step] = when.timestamp()
    missing = [step for step in steps if step not in stamps]
    if missing:
        raise SystemExit(f"python-audio-separator's log lacks {missing}:\n{log[-3000:]}")
    return stamps


def stembridge_side(model: Path, clip: Path, out: Path, *flags: str, read: bool = True) -> dict:
    """``stembridge separate`` on ``clip`` with the file ``model``, in its own process."""
    command = [
        sys.executable,
        "-m",
        "bridge",
        "separate",
        str(clip),
        "--model",
        str(model),
        "-o",
        str(out),
        "--json",
        "--overwrite",
        *flags,
    ]
    out.mkdir(parents=True)
    measured = run(command, out, env={"STEMBRIDGE_OFFLINE": "1"})
    (result,) = json.loads(measured.stdout)["results"]
    if result["reused_from"] is not None:
        raise SystemExit(f"StemBridge reused {result['reused_from']} instead of separating")
    folder = Path(result["folder"])
    stems = {
        stem["name"]: sf.read(str(folder / stem["path"]), dtype="float32", always_2d=True)[0].T
        for stem in (result["stems"] if read else ())
    }
    return {
        "wall_seconds": measured.wall_seconds,
        "cpu_seconds": measured.cpu_seconds,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "separation_seconds": result["timings"]["total_seconds"],
        "stems": stems,
    }


def agreement(theirs: dict, ours: dict, mix: np.ndarray, *, mdx_net: bool) -> dict:
    """The largest difference between the two sides' stems, raw and on equal terms."""
    pairs = {name: name for name in ours["stems"] if name in theirs["stems"]}
    left = [name for name in ours["stems"] if name not in pairs]
    right = [name for name in theirs["stems"] if name not in pairs.values()]
    if len(left) == len(right) == 1:  # the RoFormer's "other" is StemBridge's "instrumental"
        pairs[left[0]] = right[0]
    if len(pairs) != len(ours["stems"]):
        raise SystemExit(f"stems do not pair: {sorted(ours['stems'])}, {sorted(theirs['stems'])}")
    peak = float(np.abs(mix).max())
    primary = INST_HQ_3["primary_stem"].lower()
    raw, equal = 0.0, 0.0
    for mine, their_name in pairs.items():
        a, b = ours["stems"][mine], theirs["stems"][their_name]
        raw = max(raw, float(np.abs(a - b).max()))
        if mdx_net:  # undo python-audio-separator's "demix(mix) * peak"
            b = b / peak if mine == primary else mix - (mix - b) / peak
        equal = max(equal, float(np.abs(a - b).max()))
    their_peak = max(float(np.abs(stem).max()) for stem in theirs["stems"].values())
    return {
        "max_abs_difference": equal,
        "max_abs_difference_raw": raw,
        "mix_peak": round(peak, 4),
        "separator_stem_peak": round(their_peak, 4),
        "separator_rescaled_a_stem": their_peak > SEPARATOR_PEAK,
        "stems": {mine: their_name for mine, their_name in pairs.items()},
    }


def fastest(runs: list[dict]) -> dict:
    """The fastest of repeated runs (the least disturbed on a shared machine), peak RSS
    the largest, stems the first run's."""
    best = dict(min(runs, key=lambda run: run["wall_seconds"]))
    best["separation_seconds"] = min(run["separation_seconds"] for run in runs)
    best["cpu_seconds"] = min(run["cpu_seconds"] for run in runs)
    best["peak_rss_bytes"] = max(run["peak_rss_bytes"] for run in runs)
    best["stems"] = runs[0]["stems"]
    return best


def compare(args: argparse.Namespace, work: Path) -> list[dict]:
    clip = write_clip(work / "clip.wav", args.seconds, subtype="FLOAT", seed=5)
    mix = sf.read(str(clip), dtype="float32", always_2d=True)[0].T
    if np.abs(mix).max() >= SEPARATOR_PEAK:
        raise SystemExit("the clip's peak must stay under python-audio-separator's 0.9")
    rows = []
    raw = ("--bit-depth", "32", "--no-exact-sum", "--no-pictures")
    for family in args.models:
        folder = work / family
        model = write_model(family, folder / "models", args.size, mix)
        sides: dict[str, list[dict]] = {"separator": [], "stembridge": []}
        for k in range(args.repeat):  # interleaved, so that both see the same load
            sides["separator"].append(separator_side(model, clip, folder / f"separator{k}"))
            sides["stembridge"].append(
                stembridge_side(model, clip, folder / f"stembridge{k}", *raw)
            )
        theirs, ours = fastest(sides["separator"]), fastest(sides["stembridge"])
        row = {
            "model": model.name,
            "size": args.size,
            "audio_seconds": args.seconds,
            "runs_each": args.repeat,
            "separator_wall_seconds": round(theirs["wall_seconds"], 2),
            "separator_load_seconds": round(theirs["load_seconds"], 2),
            "separator_separation_seconds": round(theirs["separation_seconds"], 2),
            "stembridge_wall_seconds": round(ours["wall_seconds"], 2),
            "stembridge_separation_seconds": round(ours["separation_seconds"], 2),
            "ratio_wall": round(theirs["wall_seconds"] / ours["wall_seconds"], 3),
            "ratio_separation": round(theirs["separation_seconds"] / ours["separation_seconds"], 3),
            "separator_cpu_seconds": round(theirs["cpu_seconds"], 1),
            "stembridge_cpu_seconds": round(ours["cpu_seconds"], 1),
            "ratio_cpu": round(theirs["cpu_seconds"] / ours["cpu_seconds"], 3),
            "separator_peak_rss_mb": round(theirs["peak_rss_bytes"] / 2**20),
            "stembridge_peak_rss_mb": round(ours["peak_rss_bytes"] / 2**20),
            "all_walls": {
                side: [round(r["wall_seconds"], 2) for r in rs] for side, rs in sides.items()
            },
            **agreement(theirs, ours, mix, mdx_net=family == "mdx_net"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def memory(args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for family in args.models:
        folder = work / family
        folder.mkdir()
        model = None
        for index, minutes in enumerate(args.minutes):
            clip = write_clip(
                folder / f"clip{minutes:g}.wav", minutes * 60, subtype="PCM_16", seed=index + 11
            )
            if model is None:
                head = sf.read(str(clip), frames=44100 * 10, dtype="float32", always_2d=True)[0].T
                model = write_model(family, folder / "models", args.size, head)
            ours = stembridge_side(model, clip, folder / f"stembridge{minutes:g}", read=False)
            row = {
                "model": model.name,
                "size": args.size,
                "minutes": minutes,
                "stembridge_peak_rss_mb": round(ours["peak_rss_bytes"] / 2**20),
                "stembridge_wall_seconds": round(ours["wall_seconds"], 1),
            }
            if not args.skip_separator:
                theirs = separator_side(model, clip, folder / f"separator{minutes:g}", read=False)
                row["separator_peak_rss_mb"] = round(theirs["peak_rss_bytes"] / 2**20)
                row["separator_wall_seconds"] = round(theirs["wall_seconds"], 1)
            clip.unlink()
            rows.append(row)
            print(json.dumps(row), flush=True)
        mine = [row for row in rows if row["model"] == model.name]
        growth = mine[-1]["stembridge_peak_rss_mb"] / mine[0]["stembridge_peak_rss_mb"] - 1
        mine[-1]["stembridge_growth_percent"] = round(100 * growth, 1)
    return rows


def print_table(rows: list[dict]) -> None:
    """The comparison as a Markdown table."""
    print(
        "| model (size) | audio | audio-separator: wall / separation / CPU | StemBridge: wall / "
        "separation / CPU | ratio (wall, separation, CPU) | peak RSS (audio-separator, "
        "StemBridge) | max difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        name = ROFORMER if row["model"].startswith(ROFORMER) else MDX_NET
        print(
            f"| {name} ({row['size']}) | {row['audio_seconds']:g} s | "
            f"{row['separator_wall_seconds']} / {row['separator_separation_seconds']} / "
            f"{row['separator_cpu_seconds']} s | {row['stembridge_wall_seconds']} / "
            f"{row['stembridge_separation_seconds']} / {row['stembridge_cpu_seconds']} s | "
            f"{row['ratio_wall']}x, {row['ratio_separation']}x, {row['ratio_cpu']}x | "
            f"{row['separator_peak_rss_mb']} / {row['stembridge_peak_rss_mb']} MB | "
            f"{row['max_abs_difference']:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compare", "memory"])
    parser.add_argument("--models", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--size", choices=["released", "small", "tiny"])
    parser.add_argument("--seconds", type=float, default=60.0, help="compare: clip length")
    parser.add_argument("--repeat", type=int, default=1, help="compare: runs of each side")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10], help="memory")
    parser.add_argument("--skip-separator", action="store_true", help="memory: StemBridge only")
    args = parser.parse_args()
    args.size = args.size or ("small" if args.mode == "compare" else "tiny")

    with tempfile.TemporaryDirectory() as tmp:
        rows = (compare if args.mode == "compare" else memory)(args, Path(tmp))
    if args.mode == "compare":
        print_table(rows)
    print(json.dumps({"machine": machine(), "mode": args.mode, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
