"""Which stems to write: single sources and named combinations of them.

A request is a list of words. Each word is one of

* a source of the model (``vocals``),
* ``instrumental``: every source but vocals,
* ``no_<source>``: every source but that one (``no_drums``),
* ``<name>=<source>+<source>...``: a sum with a name of your choosing (``rhythm=drums+bass``),
* ``<source>@<model>``: that source, taken from another model (or named ensemble) than
  ``--model``, which gives the rest (``vocals@bs_roformer_viperx_1297``); words that
  use the source (``instrumental``, sums) then use that model's (see
  :mod:`bridge.models.lineup`).

The result is a tuple of :class:`StemPlan`, each saying which model sources are
summed into one output file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import SettingsError
from bridge.names import windows_reserved

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class StemPlan:
    """One output file: its name and the model sources summed into it."""

    name: str
    sources: tuple[str, ...]


def plan_stems(
    requested: Sequence[str] | None, model_sources: Sequence[str]
) -> tuple[StemPlan, ...]:
    """Turn a stem request into output plans.

    Args:
        requested: The words asked for; ``None`` or empty means every source on its own.
        model_sources: The sources the model produces, in its order.

    Returns:
        One plan per requested word, in request order.

    Raises:
        SettingsError: A word names no source or combination of this model, or two
            words produce the same file name.
    """
    sources = tuple(model_sources)
    if not requested:
        return tuple(StemPlan(name, (name,)) for name in sources)
    plans: list[StemPlan] = []
    for word in requested:
        plan = _plan_one(word.strip(), sources)
        if any(existing.name == plan.name for existing in plans):
            raise SettingsError(
                f"stem {plan.name!r} is requested twice; list each stem once",
                key="stems",
                value=word,
            )
        plans.append(plan)
    return tuple(plans)


def parse_stem_list(text: str) -> tuple[str, ...]:
    """Split a comma-separated ``--stems`` value into words (empty words dropped)."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def routes(requested: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """The ``(source, model)`` of each ``<source>@<model>`` word, in request order."""
    found = (word.strip().partition("@") for word in requested or ())
    return tuple((source.strip(), model.strip()) for source, at, model in found if at)


def sources_needed(plans: Sequence[StemPlan], model_sources: Sequence[str]) -> tuple[str, ...]:
    """The model sources the plans use, in model order."""
    used = {source for plan in plans for source in plan.sources}
    return tuple(source for source in model_sources if source in used)


def _plan_one(word: str, sources: tuple[str, ...]) -> StemPlan:
    if "@" in word:
        source, _, model = (part.strip() for part in word.partition("@"))
        if source in sources and model:
            return StemPlan(source, (source,))
        raise SettingsError(
            f"stem {word!r}: <stem>@<model> takes one of the model's stems "
            f"({', '.join(sources)}) from another model, e.g. vocals@bs_roformer_viperx_1297; "
            "combine routed stems with <name>=<stem>+<stem> or instrumental",
            key="stems",
            value=word,
        )
    if word in sources:
        return StemPlan(word, (word,))
    if word == "instrumental" and "vocals" in sources:
        return StemPlan(word, tuple(s for s in sources if s != "vocals"))
    if word.startswith("no_") and word[3:] in sources:
        return StemPlan(word, tuple(s for s in sources if s != word[3:]))
    if "=" in word:
        name, _, expression = word.partition("=")
        if windows_reserved(name.strip()):
            raise SettingsError(
                f"stem {word!r}: Windows keeps the name {name.strip()!r} for a device, so no "
                f"file can be called {name.strip()}.wav there; choose another name",
                key="stems",
                value=word,
            )
        parts = tuple(part.strip() for part in expression.split("+"))
        unknown = [part for part in parts if part not in sources]
        if _NAME.match(name.strip()) and parts and not unknown and len(set(parts)) == len(parts):
            return StemPlan(name.strip(), parts)
    raise SettingsError(
        f"unknown stem {word!r}; this model's stems are {', '.join(sources)}; combinations: "
        f"instrumental, no_<stem> (e.g. no_{sources[0]}), <name>=<stem>+<stem> "
        f"(e.g. rhythm={sources[0]}+{sources[1]})",
        key="stems",
        value=word,
    )
