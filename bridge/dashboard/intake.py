"""What the queue page chose for an upload, turned into a job in the daemon's store.

The page sends its choices as query parameters of the upload (``model``, ``stems``,
``preset``, ``format``); they override the daemon's config as ``submit``'s flags do, are
checked by the same settings classes (so a wrong one is refused by name, before any byte
of the file is stored), and the job is queued like any ``submit``: same spec, same store,
same worker. Settings may name files (a model's or a preset's path); a browser's may not:
models (the main one and those ``<stem>@<model>`` routes to) must be ones StemBridge
lists, presets ones it finds, so nothing the client sends is opened as a path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from bridge.dashboard.uploads import Upload, UploadRefused
from bridge.effects.plan import plan_effects
from bridge.errors import StemBridgeError
from bridge.jobs.job import Job
from bridge.jobs.status_file import update_status
from bridge.jobs.store import JobStore
from bridge.names import stem_folder
from bridge.pipeline.spec import PRIORITY_INTERACTIVE, JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings
from bridge.stems import parse_stem_list, routes

#: The choices an upload may carry, and what each sets.
CHOICES = ("model", "stems", "preset", "format")
#: What a job from the dashboard says it came from (``jobs`` shows it).
SOURCE = "dashboard"


@dataclass(frozen=True, kw_only=True)
class JobDefaults:
    """The daemon's config for jobs, which an upload's choices override.

    Attributes:
        separation: ``[separation]``.
        output: ``[output]``.
        effects: ``[effects]``.
    """

    separation: SeparationSettings = field(default_factory=SeparationSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)


@dataclass(frozen=True, kw_only=True)
class Choices:
    """An upload's settings, checked.

    Attributes:
        separation: Model and stems.
        output: Format.
        effects: Preset.
    """

    separation: SeparationSettings
    output: OutputSettings
    effects: EffectsSettings


def read_choices(
    query: Mapping[str, str],
    defaults: JobDefaults,
    *,
    models: Collection[str],
    presets: Collection[str],
) -> Choices:
    """The choices in ``query`` over ``defaults``; an empty value keeps the default.

    Args:
        query: The upload's query parameters, its ``name`` taken out.
        defaults: The config's settings.
        models: The model names a browser may choose (``models list``'s).
        presets: The preset names a browser may choose (``presets list``'s).

    Raises:
        UploadRefused: 400 for an unknown choice, a model or preset given by path or not
            known, or a value the settings refuse.
    """
    unknown = sorted(set(query) - set(CHOICES))
    if unknown:
        raise UploadRefused(
            400, f"unknown upload choice {unknown[0]!r}; the choices are {', '.join(CHOICES)}"
        )
    given = {key: value.strip() for key, value in query.items() if value.strip()}
    asked = [given["model"]] if "model" in given else []
    asked += [model for _, model in routes(parse_stem_list(given.get("stems", "")))]
    for model in asked:
        if model not in models:
            raise UploadRefused(
                400,
                f"model {model!r} is not one StemBridge lists; choose one of `stembridge "
                "models list` (a model file is imported with `stembridge models import`, "
                "not named by path from a browser)",
            )
    if "preset" in given and given["preset"] not in presets:
        raise UploadRefused(
            400,
            f"preset {given['preset']!r} is not one of {', '.join(sorted(presets))}; put a "
            "preset file in the user preset folder to offer it (`stembridge presets list`)",
        )
    try:
        separation = defaults.separation
        if "model" in given or "stems" in given:
            separation = dataclasses.replace(
                separation,
                model=given.get("model", separation.model),
                stems=parse_stem_list(given["stems"]) if "stems" in given else separation.stems,
            )
        output = defaults.output
        if "format" in given:
            output = dataclasses.replace(output, format=given["format"])  # type: ignore[arg-type]
        effects = defaults.effects
        if "preset" in given:
            effects = dataclasses.replace(effects, preset=given["preset"])
        # A preset that is not there is refused now, as submit does, not when the job runs.
        plan_effects(effects, stems=separation.stem_plans, model_sources=separation.sources)
    except StemBridgeError as exc:
        raise UploadRefused(400, str(exc)) from exc
    return Choices(separation=separation, output=output, effects=effects)


def queue_upload(store: JobStore, upload: Upload, choices: Choices) -> Job:
    """Queue the upload's job; its stems go beside it, in its own upload folder."""
    spec = JobSpec(
        input=str(upload.path),
        folder=str(stem_folder(upload.path.parent, upload.path)),
        separation=choices.separation,
        output=choices.output,
        effects=choices.effects,
        priority=PRIORITY_INTERACTIVE,
        source=SOURCE,
    )
    job, _ = store.submit(spec)
    update_status(job)
    return job
