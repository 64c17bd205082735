"""The models StemBridge knows by name, and the official files that hold them.

This is data only (no torch): the CLI validates ``--model`` and ``--stems``
against it before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import SettingsError

FOUR_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = ("drums", "bass", "other", "vocals", "guitar", "piano")

#: Where demucs' own downloader fetches the original ``.th`` checkpoints.
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"


@dataclass(frozen=True)
class ModelSpec:
    """A named model: a bag of one or more networks with the same sources.

    Attributes:
        name: The name users type (``htdemucs``).
        checkpoints: Official checkpoint file names, ``<signature>-<sha256 prefix>.th``,
            one per network in the bag, in bag order.
        hf_repo: The Hugging Face repository holding ``<name>.yaml`` and
            ``<signature>.safetensors`` files.
        sources: The stems the model produces, in the model's output order.
        description: One line for ``stembridge models list``.
        max_segment_seconds: The longest segment the networks accept (transformer
            models cannot look further than their training segment); ``None`` if any.
    """

    name: str
    checkpoints: tuple[str, ...]
    hf_repo: str
    sources: tuple[str, ...]
    description: str
    max_segment_seconds: float | None = 7.8

    @property
    def signatures(self) -> tuple[str, ...]:
        """The network signatures, in bag order."""
        return tuple(name.split("-", 1)[0] for name in self.checkpoints)

    @property
    def bag_file(self) -> str:
        """The bag definition file name (``<name>.yaml``)."""
        return f"{self.name}.yaml"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="htdemucs",
            checkpoints=("955717e8-8726e21a.th",),
            hf_repo="adefossez/HTDemucs",
            sources=FOUR_SOURCES,
            description="Hybrid Transformer Demucs v4, 4 stems (default)",
        ),
        ModelSpec(
            name="htdemucs_ft",
            checkpoints=(
                "f7e0c4bc-ba3fe64a.th",
                "d12395a8-e57c48e6.th",
                "92cfc3b6-ef3bcb9c.th",
                "04573f0d-f3cf25b2.th",
            ),
            hf_repo="adefossez/HTDemucs-ft",
            sources=FOUR_SOURCES,
            description="htdemucs fine-tuned, one specialist per stem: best, ~4x slower",
        ),
        ModelSpec(
            name="htdemucs_6s",
            checkpoints=("5c90dfd2-34c22ccb.th",),
            hf_repo="adefossez/HTDemucs-6s",
            sources=SIX_SOURCES,
            description="htdemucs with guitar and piano stems (piano is weak)",
        ),
        ModelSpec(
            name="hdemucs_mmi",
            checkpoints=("75fc33f5-1941ce65.th",),
            hf_repo="adefossez/Demucs-hdemucs_mmi",
            sources=FOUR_SOURCES,
            description="Hybrid Demucs v3 retrained on extra data, 4 stems",
            max_segment_seconds=None,
        ),
    )
}

DEFAULT_MODEL = "htdemucs"


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a named model.

    Raises:
        SettingsError: The name is not one of the known models.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise SettingsError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)} "
            f"(for example --model {DEFAULT_MODEL})",
            key="model",
            value=name,
        ) from None
