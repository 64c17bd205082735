"""The model files of ``families.py``: randomly initialised networks in their official forms.

* BS-RoFormer: ``model_bs_roformer_ep_317_sdr_12.9755.ckpt`` (a state dict) beside its
  ``.yaml``: the viperx model's configuration (``EP_317`` of ``tests/test_roformer.py``:
  dim 512, depth 12, 62 bands, hop 441, chunks of 352,800 samples) and the inference
  section of the released yaml (MSST's ``configs/viperx/``: ``dim_t: 801``,
  ``num_overlap: 2``), or a smaller network on the same STFT, bands and chunks.
* MDX-Net: ``UVR-MDX-NET-Inst_HQ_3.onnx`` (exported with torch.onnx) for Inst_HQ_3's
  spectrum (n_fft 6144, 3072 bins, 256 frames, primary stem Instrumental). UVR's files
  do not say what is inside; the network here is kuielab's MDX-Net layout (ConvTDFNet:
  a U-Net of time-frequency convolutions and dense layers over frequency) at a size close
  to the released file's, or smaller. Its batch norms are set from the test clip's
  spectrum and its last layer scaled so that the primary stem is about half the mix, as
  a trained network's would be; random weights would otherwise give stems thousands of
  times louder than the mix, which python-audio-separator would rescale on writing.

UVR finds an MDX-Net's parameters by the hash of its file; a random file has no entry,
so StemBridge gets them from the sidecar ``UVR-MDX-NET-Inst_HQ_3.json`` and
python-audio-separator from the ``mdx_model_data.json`` it would otherwise download
into its model folder. Its model index ``download_checks.json`` (also downloaded, also
written here) lists the two files under the names UVR gives them.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_roformer import EP_317, EP_317_AUDIO  # noqa: E402

from bridge.models.families import roformer  # noqa: E402
from bridge.models.families.msst_config import read_config  # noqa: E402
from bridge.models.families.uvr_params import uvr_hash  # noqa: E402

ROFORMER = "model_bs_roformer_ep_317_sdr_12.9755"
MDX_NET = "UVR-MDX-NET-Inst_HQ_3"

#: The model section's changes from the released configuration, per size.
ROFORMER_SIZES: dict[str, dict[str, object]] = {
    "released": {},
    "small": {"dim": 64, "depth": 2, "heads": 4, "dim_head": 32},
    "tiny": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "mask_estimator_depth": 1},
}
#: The released yaml's inference section (python-audio-separator reads num_overlap).
ROFORMER_INFERENCE = {"batch_size": 4, "dim_t": 801, "num_overlap": 2}

#: Inst_HQ_3's entry in UVR's model_data.json.
INST_HQ_3 = {
    "compensate": 1.022,
    "mdx_dim_f_set": 3072,
    "mdx_dim_t_set": 8,
    "mdx_n_fft_scale_set": 6144,
    "primary_stem": "Instrumental",
}
#: ConvTDFNet layers per size: blocks, convolutions per block, channel growth, dense
#: bottleneck factor ("released": 16.7 M parameters, a 67 MB file).
MDX_SIZES: dict[str, dict[str, int]] = {
    "released": {"num_blocks": 11, "l": 3, "g": 48, "bn": 8},
    "small": {"num_blocks": 5, "l": 1, "g": 8, "bn": 16},
    "tiny": {"num_blocks": 3, "l": 1, "g": 4, "bn": 16},
}


def write_bs_roformer(folder: Path, size: str, *, seed: int = 0) -> Path:
    """``ROFORMER.ckpt`` beside ``ROFORMER.yaml`` and python-audio-separator's index."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{ROFORMER}.yaml"
    document = {
        "audio": dict(EP_317_AUDIO),
        "model": {**EP_317, **ROFORMER_SIZES[size]},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        "inference": dict(ROFORMER_INFERENCE),
    }
    config.write_text(yaml.dump(document), encoding="utf-8")  # tuples as MSST writes them
    torch.manual_seed(seed)
    network = roformer.build(read_config(config, architecture="bs_roformer"))
    checkpoint = folder / f"{ROFORMER}.ckpt"
    torch.save(network.state_dict(), checkpoint)
    write_separator_index(folder, mdx_hashes={})
    return checkpoint


class _TfcTdf(nn.Module):
    """Convolutions over time and frequency, then a dense layer over frequency, added."""

    def __init__(self, channels: int, layers: int, bins: int, bottleneck: int) -> None:
        super().__init__()
        self.tfc = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(channels, channels, 3, padding=1),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(),
                )
                for _ in range(layers)
            )
        )
        self.tdf = nn.Sequential(
            nn.Linear(bins, bins // bottleneck, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Linear(bins // bottleneck, bins, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tfc(x)
        return x + self.tdf(x)


class ConvTdfNet(nn.Module):
    """kuielab's MDX-Net: ``(B, 4, dim_f, dim_t)`` spectrum in, the primary's out."""

    def __init__(self, *, dim_f: int, num_blocks: int, l: int, g: int, bn: int) -> None:  # noqa: E741
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(4, g, 1), nn.BatchNorm2d(g), nn.ReLU())
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        bins, channels = dim_f, g
        for _ in range(num_blocks // 2):
            self.encoders.append(_TfcTdf(channels, l, bins, bn))
            self.downs.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels + g, 2, stride=2),
                    nn.BatchNorm2d(channels + g),
                    nn.ReLU(),
                )
            )
            bins, channels = bins // 2, channels + g
        self.bottleneck = _TfcTdf(channels, l, bins, bn)
        for _ in range(num_blocks // 2):
            self.ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(channels, channels - g, 2, stride=2),
                    nn.BatchNorm2d(channels - g),
                    nn.ReLU(),
                )
            )
            bins, channels = bins * 2, channels - g
            self.decoders.append(_TfcTdf(channels, l, bins, bn))
        self.last = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x).transpose(-1, -2)  # frequency last, for the dense layers
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(up(x) * skip)
        return self.last(x.transpose(-1, -2))


def mdx_spectrum(audio: np.ndarray, *, n_fft: int, dim_f: int, frames: int) -> torch.Tensor:
    """The network's input for the first chunk of ``(2, n)`` audio, as UVR makes it."""
    chunk = torch.from_numpy(np.ascontiguousarray(audio[:, : 1024 * (frames - 1)]))
    window = torch.hann_window(n_fft, periodic=True)
    spectrum = torch.stft(chunk, n_fft, 1024, window=window, center=True, return_complex=True)
    parts = torch.view_as_real(spectrum).permute(0, 3, 1, 2).reshape(1, 4, -1, frames)
    return parts[:, :, :dim_f]


def write_mdx_net(folder: Path, size: str, audio: np.ndarray, *, seed: int = 0) -> Path:
    """``MDX_NET.onnx``, its sidecar and python-audio-separator's index files in ``folder``.

    Args:
        folder: Where they go (python-audio-separator's ``--model_file_dir``).
        size: A key of :data:`MDX_SIZES`.
        audio: ``(2, n)`` float32 audio the batch norms and output scale are set from.
        seed: The weights' random seed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dim_f, frames = INST_HQ_3["mdx_dim_f_set"], 2 ** INST_HQ_3["mdx_dim_t_set"]
    torch.manual_seed(seed)
    network = ConvTdfNet(dim_f=dim_f, **MDX_SIZES[size])
    spectrum = mdx_spectrum(
        audio, n_fft=INST_HQ_3["mdx_n_fft_scale_set"], dim_f=dim_f, frames=frames
    )
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None  # a plain average over what it sees
        network.train()(spectrum)
        network.eval()
        scale = 0.5 * spectrum.std() / network(spectrum).std()
        network.last.weight *= scale
        network.last.bias *= scale
    path = folder / f"{MDX_NET}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            network,
            (spectrum,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}},
        )
    (folder / f"{MDX_NET}.json").write_text(json.dumps(INST_HQ_3), encoding="utf-8")
    write_separator_index(folder, mdx_hashes={uvr_hash(path): INST_HQ_3})
    return path


def write_separator_index(folder: Path, *, mdx_hashes: dict[str, dict[str, object]]) -> None:
    """The files python-audio-separator downloads into its model folder, for these models.

    ``download_checks.json`` (UVR's list of model files, here the two of this benchmark
    under the names UVR gives them), ``mdx_model_data.json`` (MDX-Net parameters by file
    hash) and ``vr_model_data.json`` (VR models: none). It keeps and reads files that
    are already there, so it runs without the network, on these files.
    """
    index = {
        "vr_download_list": {},
        "mdx_download_list": {"MDX-Net Model: UVR-MDX-NET Inst HQ 3": f"{MDX_NET}.onnx"},
        "mdx_download_vip_list": {},
        "demucs_download_list": {},
        "mdx23c_download_list": {},
        "mdx23c_download_vip_list": {},
        "roformer_download_list": {
            "Roformer Model: BS-Roformer-Viperx-1297": {f"{ROFORMER}.ckpt": f"{ROFORMER}.yaml"}
        },
    }
    (folder / "download_checks.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    data = folder / "mdx_model_data.json"
    known = json.loads(data.read_text(encoding="utf-8")) if data.exists() else {}
    data.write_text(json.dumps({**known, **mdx_hashes}, indent=1), encoding="utf-8")
    (folder / "vr_model_data.json").write_text("{}", encoding="utf-8")
