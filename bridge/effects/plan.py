"""Settle what happens to each stem of one job, before any audio is touched.

Precedence is explicit: the job's :class:`~bridge.settings.EffectsSettings`
override the preset, which overrides the defaults. The result says, for each
output stem, its chain and tail; whether stems are loudness-normalised; and
whether exact-sum is on: the residual the model leaves (input minus the sum of
all sources) added to one source, so that stems covering every source once add
back to the input. Exact-sum is on by default when nothing changes the stems and
refused when something does, because the sum could not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.effects.presets import LoudnessTarget, Preset, StemTreatment, load_preset
from bridge.errors import SettingsError
from bridge.settings import EffectsSettings
from bridge.stems import StemPlan


@dataclass(frozen=True)
class EffectsPlan:
    """The post-separation work of one job.

    Attributes:
        preset: The preset used.
        treatments: Output stem name -> its chain and tail.
        loudness: Normalisation, or ``None``.
        residual_source: The model source that takes the residual; ``None`` when
            exact-sum is off or no requested stem holds that source.
        expect_sum: Whether the stems are meant to add back to the input (exact-sum on
            and every model source in exactly one stem); the manifest's ``stems_add_up``
            says whether the written files do (see :mod:`bridge.pipeline.publish`).
    """

    preset: Preset
    treatments: dict[str, StemTreatment]
    loudness: LoudnessTarget | None
    residual_source: str | None
    expect_sum: bool

    def describe(self) -> dict[str, Any]:
        """The plan as recorded in the manifest."""
        return {
            "preset": self.preset.name,
            "preset_path": str(self.preset.path),
            "preset_sha256": self.preset.sha256,
            "exact_sum": self.residual_source is not None,
            "residual_stem": self.residual_source,
            "loudness": None
            if self.loudness is None
            else {
                "target_lufs": self.loudness.target_lufs,
                "match_mix": self.loudness.match_mix,
                "true_peak_dbtp": self.loudness.true_peak_dbtp,
            },
        }


def plan_effects(
    settings: EffectsSettings,
    *,
    stems: Sequence[StemPlan],
    model_sources: Sequence[str],
    user_dir: Path | None = None,
) -> EffectsPlan:
    """Load the preset and combine it with the job's settings.

    Args:
        settings: The job's effects settings.
        stems: The output stems.
        model_sources: The model's sources, in order.
        user_dir: The user preset folder (``None``: the default one).

    Raises:
        PresetError: The preset is missing or invalid.
        SettingsError: The residual stem is not a source of the model, or exact-sum
            was asked for together with effects or loudness.
    """
    preset = load_preset(settings.preset, user_dir=user_dir)
    treatments = {plan.name: preset.for_stem(plan.name) for plan in stems}
    loudness = _loudness(settings, preset)
    changes = loudness is not None or any(t.chain or t.tail_seconds for t in treatments.values())
    taker = residual_taker(settings.residual_stem, model_sources)
    if taker not in model_sources:
        raise SettingsError(
            f"residual stem {taker!r} is not a source of this model; use one "
            f"of {', '.join(model_sources)}",
            key="residual_stem",
            value=taker,
        )
    exact_sum = (not changes) if settings.exact_sum is None else settings.exact_sum
    if exact_sum and changes:
        raise SettingsError(
            f"exact-sum cannot hold when preset {preset.name!r} or the loudness settings change "
            "the stems; use --preset clean without loudness, or --no-exact-sum",
            key="exact_sum",
            value=True,
        )
    holds = [plan for plan in stems if taker in plan.sources]
    residual = taker if exact_sum and holds else None
    used = [source for plan in stems for source in plan.sources]
    partition = sorted(used) == sorted(model_sources)
    return EffectsPlan(
        preset=preset,
        treatments=treatments,
        loudness=loudness,
        residual_source=residual,
        expect_sum=residual is not None and partition,
    )


def residual_taker(asked: str | None, model_sources: Sequence[str]) -> str:
    """The source that takes the residual: the one asked for, else ``other``, else the
    model's last source (``instrumental`` of a vocals model)."""
    if asked is not None:
        return asked
    return "other" if "other" in model_sources else model_sources[-1]


def _loudness(settings: EffectsSettings, preset: Preset) -> LoudnessTarget | None:
    ceiling = settings.true_peak_dbtp
    if settings.loudness_lufs is not None or settings.match_mix:
        return LoudnessTarget(
            target_lufs=settings.loudness_lufs,
            match_mix=settings.match_mix,
            true_peak_dbtp=-1.0 if ceiling is None else ceiling,
        )
    if preset.loudness is None:
        return None
    if ceiling is None:
        return preset.loudness
    return LoudnessTarget(
        target_lufs=preset.loudness.target_lufs,
        match_mix=preset.loudness.match_mix,
        true_peak_dbtp=ceiling,
    )
