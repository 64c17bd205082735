"""Stem words: sources, instrumental, no_<stem>, named sums, and their refusals."""

from __future__ import annotations

import pytest

from bridge.errors import SettingsError
from bridge.models.catalog import FOUR_SOURCES, SIX_SOURCES
from bridge.stems import StemPlan, parse_stem_list, plan_stems, sources_needed


def test_default_is_every_source() -> None:
    assert plan_stems(None, FOUR_SOURCES) == tuple(StemPlan(s, (s,)) for s in FOUR_SOURCES)


def test_combinations() -> None:
    plans = plan_stems(
        parse_stem_list("vocals, instrumental,no_drums,rhythm=drums+bass"), SIX_SOURCES
    )
    assert plans == (
        StemPlan("vocals", ("vocals",)),
        StemPlan("instrumental", ("drums", "bass", "other", "guitar", "piano")),
        StemPlan("no_drums", ("bass", "other", "vocals", "guitar", "piano")),
        StemPlan("rhythm", ("drums", "bass")),
    )
    assert sources_needed(plans[3:], SIX_SOURCES) == ("drums", "bass")


@pytest.mark.parametrize(
    "word", ["guitar", "no_guitar", "x=drums+kazoo", "=drums", "a b=drums", "x=drums+drums"]
)
def test_unknown_words_name_the_choices(word: str) -> None:
    with pytest.raises(SettingsError, match="this model's stems are drums, bass, other, vocals"):
        plan_stems([word], FOUR_SOURCES)


def test_the_same_stem_twice_is_refused() -> None:
    with pytest.raises(SettingsError, match="requested twice"):
        plan_stems(["vocals", "vocals"], FOUR_SOURCES)
