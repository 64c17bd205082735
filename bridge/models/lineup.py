"""Which models one separation runs, and which of them gives each source.

* An **ensemble** is several models giving the same stems, combined stem by stem with
  one of UVR's and python-audio-separator's algorithms (:mod:`bridge.models.ensemble`):
  ``--model A --model B --ensemble max_spec``, or a named ensemble of the catalog
  (``vocals-best``). One model alone is an ensemble of one.
* **Routing** takes a source from another model than ``--model``: the stem word
  ``vocals@bs_roformer_viperx_1297`` (see :mod:`bridge.stems`). The other sources come
  from ``--model``. The sources stay ``--model``'s, so every stem word and exact-sum work
  as they do for it alone: the residual still goes to one stem and the stems add back
  to the input.

Data only (no torch, no NumPy): settings check their lineup when they are made, and
host commands stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import SettingsError
from bridge.models.catalog import (
    DEFAULT_ALGORITHM,
    WEIGHTED,
    Algorithm,
    ModelSpec,
    get_spec,
    spec_for_file,
)


@dataclass(frozen=True)
class Ensemble:
    """Models whose same stems are combined into one set.

    Attributes:
        name: What logs and manifests call it: the model's or the named ensemble's
            name, or the members' names joined by ``+``.
        members: The models, each with the ensemble's sources.
        algorithm: How each stem is combined (one member: unused).
        weights: One per member for the weighted algorithms; ``None`` is equal weights.
    """

    name: str
    members: tuple[ModelSpec, ...]
    algorithm: Algorithm = DEFAULT_ALGORITHM
    weights: tuple[float, ...] | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The stems it gives, in its first member's order."""
        return self.members[0].sources

    def describe(self) -> dict[str, Any]:
        """What a manifest records of it."""
        entry: dict[str, Any] = {"models": [member.name for member in self.members]}
        if len(self.members) > 1:
            entry["ensemble"] = self.algorithm
            entry["weights"] = list(self.weights) if self.weights else None
        return entry


@dataclass(frozen=True)
class Lineup:
    """The ensembles one separation runs, and which gives each source.

    Attributes:
        primary: ``--model``: gives every source that is not routed elsewhere.
        routes: ``(source, ensemble)`` for each source taken from another model.
    """

    primary: Ensemble
    routes: tuple[tuple[str, Ensemble], ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources, as ``--model`` names and orders them."""
        return self.primary.sources

    @property
    def single(self) -> ModelSpec | None:
        """The one model, when there is one model and nothing routed."""
        if len(self.primary.members) == 1 and not self.routes:
            return self.primary.members[0]
        return None

    def one(self) -> ModelSpec:
        """The one model (for a loader of one model).

        Raises:
            SettingsError: There are several.
        """
        if self.single is None:
            raise SettingsError(
                f"{self.name} is several models; load each of them",
                key="model",
                value=self.name,
            )
        return self.single

    @property
    def name(self) -> str:
        """``--model``'s name, then each route: ``htdemucs, vocals@bs_roformer_viperx_1297``."""
        return ", ".join([self.primary.name, *(f"{s}@{e.name}" for s, e in self.routes)])

    @property
    def samplerate(self) -> int:
        return self.primary.members[0].samplerate

    @property
    def channels(self) -> int:
        return self.primary.members[0].channels

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """Every model of the lineup once, ``--model``'s first."""
        found: dict[str, ModelSpec] = {}
        for ensemble in (self.primary, *(e for _, e in self.routes)):
            for member in ensemble.members:
                found.setdefault(member.name, member)
        return tuple(found.values())

    def provider(self, source: str) -> Ensemble:
        """The ensemble that gives ``source``."""
        return dict(self.routes).get(source, self.primary)

    def providers(self, wanted: Sequence[str]) -> tuple[tuple[Ensemble, tuple[str, ...]], ...]:
        """The ensembles the ``wanted`` sources come from, each with its share of them (in
        ``wanted`` order); an ensemble none of them comes from is not run."""
        shares: dict[str, tuple[Ensemble, list[str]]] = {}
        for source in wanted:
            ensemble = self.provider(source)
            shares.setdefault(ensemble.name, (ensemble, []))[1].append(source)
        return tuple((ensemble, tuple(sources)) for ensemble, sources in shares.values())

    def describe(self) -> dict[str, Any]:
        """What a manifest records: where each source comes from."""
        return {source: self.provider(source).describe() for source in self.sources}


def make_lineup(
    model: str | tuple[str, ...],
    *,
    algorithm: Algorithm | None = None,
    weights: tuple[float, ...] | None = None,
    routes: Sequence[tuple[str, str]] = (),
    config_file: str | None = None,
) -> Lineup:
    """The lineup of ``--model`` (one name, or several for an ensemble), ``--ensemble``,
    ``--ensemble-weights``, the routed stems ``(source, model)`` and ``--model-config``
    (the ``.yaml`` of one ``.ckpt`` given by path).

    Raises:
        SettingsError: An unknown model; an ensemble whose models give different stems or
            run at different rates; an algorithm or weights that do not fit; a routed
            source that the model it names, or ``--model``, does not give; a config
            without one checkpoint path to go with.
    """
    if config_file is not None:
        if not isinstance(model, str):
            raise SettingsError(
                f"--model-config {config_file} goes with one --model checkpoint, not an "
                "ensemble; put each checkpoint's .yaml beside it instead",
                key="model_config",
                value=config_file,
            )
        spec = spec_for_file(Path(model), config_file=Path(config_file))
        primary = _primary_of(Ensemble(spec.name, (spec,)), algorithm, weights, model)
    else:
        primary = _primary(model, algorithm, weights)
    routed: list[tuple[str, Ensemble]] = []
    for source, name in routes:
        ensemble = _named(get_spec(name))
        if source not in ensemble.sources:
            raise SettingsError(
                f"stem {source}@{name}: {ensemble.name} gives {', '.join(ensemble.sources)}, "
                f"not {source}; route one of those, or another model",
                key="stems",
                value=f"{source}@{name}",
            )
        if source not in primary.sources:
            raise SettingsError(
                f"stem {source}@{name}: the model ({primary.name}) has no {source} to take "
                f"from {ensemble.name}; its stems are {', '.join(primary.sources)} (use "
                f"--model {ensemble.name}, or route one of those)",
                key="stems",
                value=f"{source}@{name}",
            )
        _check_rates(primary.members[0], ensemble.members[0], f"stem {source}@{name}")
        if ensemble.name != primary.name:
            routed.append((source, ensemble))
    return Lineup(primary, tuple(routed))


def _primary(
    model: str | tuple[str, ...], algorithm: Algorithm | None, weights: tuple[float, ...] | None
) -> Ensemble:
    names = (model,) if isinstance(model, str) else model
    if len(names) == 1:
        return _primary_of(_named(get_spec(names[0])), algorithm, weights, names[0])
    return _primary_of(Ensemble(" + ".join(names), _members(names)), algorithm, weights, model)


def _primary_of(
    ensemble: Ensemble,
    algorithm: Algorithm | None,
    weights: tuple[float, ...] | None,
    given: str | tuple[str, ...],
) -> Ensemble:
    """``ensemble`` under ``--ensemble`` and ``--ensemble-weights``."""
    if len(ensemble.members) == 1 and (algorithm is not None or weights is not None):
        raise SettingsError(
            f"--ensemble and --ensemble-weights combine several models; {given} is one: "
            "give --model twice or more (or a named ensemble), or leave them out",
            key="ensemble",
            value=algorithm or list(weights or ()),
        )
    chosen = algorithm or ensemble.algorithm
    # A named ensemble's own weights go with its own algorithm.
    kept = weights if weights is not None or chosen != ensemble.algorithm else ensemble.weights
    _check_weights(chosen, kept, ensemble)
    return Ensemble(ensemble.name, ensemble.members, chosen, kept)


def _named(spec: ModelSpec) -> Ensemble:
    """A model as an ensemble: a named ensemble's members, or the model alone."""
    if spec.family != "ensemble":
        return Ensemble(spec.name, (spec,))
    ensemble = Ensemble(
        spec.name, _members(spec.members), spec.algorithm or DEFAULT_ALGORITHM, spec.weights
    )
    if ensemble.sources != spec.sources:
        raise SettingsError(
            f"named ensemble {spec.name} says it gives {', '.join(spec.sources)}, but its "
            f"models give {', '.join(ensemble.sources)}; fix the catalog",
            key="model",
            value=spec.name,
        )
    return ensemble


def _members(names: Sequence[str]) -> tuple[ModelSpec, ...]:
    members: list[ModelSpec] = []
    for name in names:
        spec = get_spec(name)
        if spec.family == "ensemble":
            raise SettingsError(
                f"{name} is an ensemble itself; list its models instead "
                f"({' '.join(f'--model {member}' for member in spec.members)})",
                key="model",
                value=name,
            )
        if any(member.name == spec.name for member in members):
            raise SettingsError(
                f"model {name} is listed twice in the ensemble; list each model once",
                key="model",
                value=name,
            )
        members.append(spec)
    first = members[0]
    for other in members[1:]:
        if set(other.sources) != set(first.sources):
            raise SettingsError(
                f"an ensemble combines the same stems, but {first.name} gives "
                f"{', '.join(first.sources)} and {other.name} gives "
                f"{', '.join(other.sources)}; ensemble models with the same stems, or take "
                f"one stem from another model with --stems <stem>@<model>",
                key="model",
                value=list(names),
            )
        _check_rates(first, other, "ensemble")
    return tuple(members)


def _check_rates(a: ModelSpec, b: ModelSpec, what: str) -> None:
    """Models run together take the same stream: same rate, same channels."""
    if (a.samplerate, a.channels) != (b.samplerate, b.channels):
        raise SettingsError(
            f"{what}: {a.name} runs at {a.samplerate} Hz with {a.channels} channels and "
            f"{b.name} at {b.samplerate} Hz with {b.channels}; models run together must "
            "take the same rate and channels",
            key="model",
            value=b.name,
        )


def _check_weights(
    algorithm: Algorithm, weights: tuple[float, ...] | None, ensemble: Ensemble
) -> None:
    if weights is None:
        return
    if algorithm not in WEIGHTED:
        raise SettingsError(
            f"--ensemble-weights weigh {' and '.join(WEIGHTED)}; {algorithm} picks samples "
            "and ignores them: leave the weights out, or use a weighted algorithm",
            key="ensemble_weights",
            value=list(weights),
        )
    count = len(ensemble.members)
    if len(weights) != count:
        raise SettingsError(
            f"--ensemble-weights gives {len(weights)} weights for the {count} models of "
            f"{ensemble.name}; give one per model, in their order",
            key="ensemble_weights",
            value=list(weights),
        )
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise SettingsError(
            f"--ensemble-weights {','.join(f'{w:g}' for w in weights)}: weights are numbers "
            "of 0 or more, and not all 0",
            key="ensemble_weights",
            value=list(weights),
        )
