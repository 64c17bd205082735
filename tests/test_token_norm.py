"""demucs' transformer group norms as layer norms (bridge.models.token_norm): each swapped
norm computes what ``MyGroupNorm`` does, keeps its parameters, and an HT Demucs network
with its norms swapped gives the network's output."""

from __future__ import annotations

import pytest
import torch
from demucs.transformer import MyGroupNorm
from torch import nn

from bridge.models.token_norm import TokenGroupNorm, use_token_norms

from modelfiles import make_network

# Float32 sums in another order, on values of order 1.
TOLERANCE = 1e-5


def _norm(channels: int, *, groups: int = 1, seed: int = 0) -> MyGroupNorm:
    torch.manual_seed(seed)
    norm = MyGroupNorm(groups, channels, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize(("batch", "tokens", "channels"), [(1, 37, 24), (3, 5, 8), (2, 1, 16)])
def test_a_token_norm_computes_the_group_norm(batch: int, tokens: int, channels: int) -> None:
    norm = _norm(channels)
    swapped = TokenGroupNorm(norm)
    # Tokens with an offset and scale of their own per item, as a layer's residual has.
    x = torch.randn(batch, tokens, channels) * torch.arange(1, batch + 1)[:, None, None] + 3
    with torch.inference_mode():
        want = norm(x)
        got = swapped(x)
    assert got.shape == want.shape and got.is_contiguous()
    assert float((want - got).abs().max()) < TOLERANCE
    # The same parameters, not copies: a fine-tuned weight is the swapped norm's too.
    assert swapped.weight is norm.weight and swapped.bias is norm.bias


def test_other_shapes_compute_what_the_original_does() -> None:
    norm = _norm(6)
    swapped = TokenGroupNorm(norm)
    x = torch.randn(2, 4, 6, 3)
    with torch.inference_mode():
        assert torch.equal(norm(x), swapped(x))


def test_only_one_group_affine_norms_are_swapped_and_the_state_dict_is_kept() -> None:
    network = nn.Sequential(
        _norm(8),
        nn.Sequential(_norm(8, seed=1), _norm(8, groups=2)),
        MyGroupNorm(1, 8, affine=False),
        nn.GroupNorm(1, 8),
    )
    keys = list(network.state_dict())
    assert use_token_norms(network) == 2
    assert isinstance(network[0], TokenGroupNorm)
    assert isinstance(network[1][0], TokenGroupNorm)
    assert type(network[1][1]) is MyGroupNorm  # two groups: statistics per channel half
    assert type(network[2]) is MyGroupNorm  # no weight and bias
    assert type(network[3]) is nn.GroupNorm  # torch's own (channels-first) group norm
    assert list(network.state_dict()) == keys
    assert use_token_norms(network) == 0
    # Skipped module types keep everything inside them.
    other = nn.Sequential(nn.Sequential(_norm(8)))
    assert use_token_norms(other, skip=(nn.Sequential,)) == 0


def test_an_htdemucs_network_with_token_norms_gives_its_output() -> None:
    original = make_network(("drums", "bass", "other", "vocals"), seed=3)
    swapped = make_network(("drums", "bass", "other", "vocals"), seed=3)
    # Each transformer layer of each branch ends in one.
    assert use_token_norms(swapped) == 2
    torch.manual_seed(4)
    mix = torch.randn(1, 2, int(original.samplerate * original.segment))
    with torch.inference_mode():
        want = original(mix)
        got = swapped(mix)
    assert float((want - got).abs().max()) < TOLERANCE
