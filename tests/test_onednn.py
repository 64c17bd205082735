"""The networks' layers on oneDNN's CPU kernels (bridge.models.onednn): each swapped layer
computes what torch's own does, keeps its parameters under their names, hands what it does
not cover to the original layer, and a whole HT Demucs separation stays at parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_parity import run_stembridge
from torch import nn

from bridge.models.catalog import MODELS
from bridge.models.compiled import compiled_networks
from bridge.models.onednn import (
    OneDnnAttention,
    OneDnnConv,
    OneDnnLinear,
    query_block,
    unavailable,
    use_onednn,
)
from bridge.models.token_norm import TokenGroupNorm
from bridge.settings import SeparationSettings

from reference import demucs_bag, separate_reference
from signals import SAMPLE_RATE, music, write_audio

# Float32 sums in another order: a few units in the last place of values of order 10.
TOLERANCE = 2e-5

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


class Layers(nn.Module):
    """One of each layer the swap covers, and one it must leave alone."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(24, 32)
        self.unbiased = nn.Linear(32, 24, bias=False)
        self.conv1 = nn.Conv1d(4, 6, 5, stride=2, padding=3, dilation=2)
        self.conv2 = nn.Conv2d(6, 6, (3, 1), padding=(1, 0), groups=3)
        self.same = nn.Conv1d(4, 4, 3, padding="same")
        self.attention = nn.MultiheadAttention(24, 4, batch_first=batch_first)
        self.block = nn.Sequential(nn.GELU(), nn.Linear(24, 24))


def _compare(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("batch_first", [True, False])
def test_each_swapped_layer_matches_torch_and_keeps_its_parameters(batch_first: bool) -> None:
    torch.manual_seed(0)
    original = Layers(batch_first)
    swapped = Layers(batch_first)
    swapped.load_state_dict(original.state_dict())
    keys = list(original.state_dict())
    assert use_onednn(swapped) == 6
    assert list(swapped.state_dict()) == keys
    assert isinstance(swapped.linear, OneDnnLinear)
    assert isinstance(swapped.block[1], OneDnnLinear)
    assert isinstance(swapped.conv1, OneDnnConv) and isinstance(swapped.conv2, OneDnnConv)
    assert isinstance(swapped.attention, OneDnnAttention)
    assert type(swapped.same) is nn.Conv1d  # "same" padding: the kernel takes sizes only
    assert use_onednn(swapped) == 0  # already swapped layers stay as they are

    tokens = torch.randn(2, 37, 24)
    other = torch.randn(2, 11, 24)
    signal = torch.randn(2, 4, 301)
    image = torch.randn(2, 6, 9, 13)
    with torch.inference_mode():
        assert _compare(original.linear(tokens), swapped.linear(tokens)) < TOLERANCE
        hidden = torch.randn(3, 32)
        assert _compare(original.unbiased(hidden), swapped.unbiased(hidden)) < TOLERANCE
        assert _compare(original.conv1(signal), swapped.conv1(signal)) < TOLERANCE
        assert _compare(original.conv2(image), swapped.conv2(image)) < TOLERANCE
        order = (lambda t: t) if batch_first else (lambda t: t.transpose(0, 1))
        q, kv = order(tokens), order(other)
        for args in ((q, q, q), (q, kv, kv), (q, kv, order(torch.randn(2, 11, 24)))):
            want, _ = original.attention(*args, need_weights=False)
            got, weights = swapped.attention(*args, need_weights=False)
            assert weights is None
            assert got.shape == want.shape
            assert _compare(want, got) < TOLERANCE


def test_attention_in_blocks_of_queries_matches_torch() -> None:
    # 2048 keys: blocks of 512 queries, the last of 3000 queries a short one.
    assert query_block(2048) == 512 and query_block(2688) == 390
    assert query_block(10**8) == 1  # never an empty block
    torch.manual_seed(3)
    original = nn.MultiheadAttention(16, 2, batch_first=True)
    swapped = nn.Sequential(nn.MultiheadAttention(16, 2, batch_first=True))
    swapped[0].load_state_dict(original.state_dict())
    use_onednn(swapped)
    keys = torch.randn(2, 2048, 16)
    with torch.inference_mode():
        for queries in (keys, torch.randn(2, 3000, 16)):
            want, _ = original(queries, keys, keys, need_weights=False)
            got, _ = swapped[0](queries, keys, keys, need_weights=False)
            assert _compare(want, got) < TOLERANCE


def test_what_the_kernels_do_not_cover_runs_the_original_layer() -> None:
    torch.manual_seed(1)
    original = Layers(batch_first=True)
    swapped = Layers(batch_first=True)
    swapped.load_state_dict(original.state_dict())
    use_onednn(swapped)
    tokens = torch.randn(2, 9, 24)
    mask = torch.rand(9, 9) > 0.5
    with torch.inference_mode():
        # A mask, or the attention weights asked for: torch's own computation, exactly.
        want = original.attention(tokens, tokens, tokens, attn_mask=mask)
        got = swapped.attention(tokens, tokens, tokens, attn_mask=mask)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
        # Other dtypes: torch's kernels.
        half = tokens.double()
        assert torch.equal(
            nn.functional.linear(
                half, original.linear.weight.double(), original.linear.bias.double()
            ),
            swapped.linear.double()(half),
        )
    # With autograd (fine-tuning, say), gradients flow through torch's kernels.
    swapped.unbiased(torch.randn(3, 32)).sum().backward()
    assert swapped.unbiased.weight.grad is not None


def test_the_kernels_are_x86_only_and_the_reason_is_given() -> None:
    assert unavailable("x86_64") is None and unavailable("AMD64") is None
    assert "x86-64 only, not arm64" in str(unavailable("arm64"))
    network = Layers(batch_first=True)
    assert isinstance(network.linear, nn.Linear)


def test_an_htdemucs_separation_on_onednn_matches_apply_model(
    tiny_models: Path, tmp_path: Path
) -> None:
    mix = music(4 * SAMPLE_RATE, seed=9)
    source = write_audio(tmp_path / "mix.wav", mix, subtype="FLOAT")
    fast = run_stembridge(source, tmp_path / "onednn", tiny_models, SeparationSettings())
    plain = run_stembridge(
        source, tmp_path / "torch", tiny_models, SeparationSettings(cpu_kernels="torch")
    )
    spec = MODELS["htdemucs"]
    reference = separate_reference(demucs_bag(tiny_models, spec), mix)
    for k, name in enumerate(spec.sources):
        np.testing.assert_allclose(fast[name], reference[k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(plain[name], reference[k], atol=1e-4, rtol=0)
    # The two kernels really differ (rounding), so the swap did happen.
    assert any(not np.array_equal(fast[name], plain[name]) for name in spec.sources)


def test_settings_choose_the_kernels_and_cpu_only(tiny_models: Path) -> None:
    from bridge.models.loading import load_bag
    from bridge.models.weights import locate

    settings = SeparationSettings()
    files = locate(settings.lineup.one(), folders=[tiny_models], offline=True)
    fast = compiled_networks(load_bag(files).models, settings)
    plain = compiled_networks(load_bag(files).models, SeparationSettings(cpu_kernels="torch"))
    assert any(
        isinstance(m, (OneDnnLinear, OneDnnAttention, OneDnnConv)) for m in fast[0].modules()
    )
    assert not any(
        isinstance(m, (OneDnnLinear, OneDnnAttention, OneDnnConv)) for m in plain[0].modules()
    )
    # The transformer's group norms go with the kernels: torch's setting keeps demucs' own.
    assert any(isinstance(m, TokenGroupNorm) for m in fast[0].modules())
    assert not any(isinstance(m, TokenGroupNorm) for m in plain[0].modules())
