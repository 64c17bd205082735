"""What a settings library costs the host commands: import time, command time, checking.

    python benchmarks/schema_libraries.py [--runs 15]

Measured for msgspec (what bridge.schema uses), pydantic v2 and cattrs (with attrs), each
where installed:

- import: what ``import LIBRARY`` adds to a process that already imported ``bridge.cli``
  (``python -X importtime``; the median of ``--runs``), since that is what ``status``,
  ``jobs`` and ``submit`` would pay on every call;
- checking: one set of separation settings (eight fields with ranges and choices) from a
  dict, the way each library does it, in microseconds;
- and, for StemBridge as it is: ``JobSpec.from_json`` of a full spec, and the wall time of
  ``stembridge status``, ``jobs`` and ``submit FILE`` (the median of ``--runs``), run by
  the interpreter itself, not a shim that adds its own start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

LIBRARIES = {"msgspec": "msgspec", "pydantic": "pydantic.dataclasses", "cattrs": "cattrs"}
VALUES = {
    "model": "htdemucs",
    "stems": ["vocals", "instrumental"],
    "device": "cpu",
    "shifts": 1,
    "overlap": 0.5,
    "segment_seconds": 5,
    "batch_size": None,
    "precision": "fp32",
}
DEVICE = r"^(auto|cpu|cuda|cuda:[0-9]+)\Z"


def import_ms(module: str, runs: int) -> float:
    """The median time ``import module`` adds to a process importing ``bridge.cli`` (which
    may import it itself: then its share of that import)."""
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import bridge.cli; import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        # A module's line comes after its children's and counts them (its cumulative
        # time); a package imported on the way to a submodule has a line of its own.
        wanted = {module, module.partition(".")[0]}
        cumulative = {}
        for line in done.stderr.splitlines():
            parts = line.split("|")  # "import time: self | cumulative | name"
            if len(parts) == 3 and parts[2].strip() in wanted:
                cumulative[parts[2].strip()] = int(parts[1])
        times.append(sum(cumulative.values()) / 1000)
    return statistics.median(times)


def msgspec_check() -> Callable[[], Any]:
    import msgspec

    meta = msgspec.Meta
    settings = msgspec.defstruct(
        "Settings",
        [
            ("model", str),
            ("stems", tuple[str, ...]),
            ("device", Annotated[str, meta(pattern=DEVICE)]),
            ("shifts", Annotated[int, meta(ge=0, le=20)]),
            ("overlap", Annotated[float, meta(ge=0, le=0.99)]),
            ("segment_seconds", Annotated[float, meta(ge=1)] | None),
            ("batch_size", Annotated[int, meta(ge=1, le=256)] | None),
            ("precision", Literal["fp32", "fp16", "bf16"]),
        ],
        frozen=True,
        kw_only=True,
    )
    return lambda: msgspec.convert(VALUES, settings)


def pydantic_check() -> Callable[[], Any]:
    from pydantic import ConfigDict, Field, StrictFloat, StrictInt, StrictStr, TypeAdapter
    from pydantic.dataclasses import dataclass

    @dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))
    class Settings:
        model: StrictStr
        stems: tuple[StrictStr, ...]
        device: Annotated[StrictStr, Field(pattern=DEVICE.replace(r"\Z", "$"))]  # Rust regex
        shifts: Annotated[StrictInt, Field(ge=0, le=20)]
        overlap: Annotated[StrictFloat, Field(ge=0, le=0.99)]
        segment_seconds: Annotated[StrictFloat, Field(ge=1)] | None
        batch_size: Annotated[StrictInt, Field(ge=1, le=256)] | None
        precision: Literal["fp32", "fp16", "bf16"]

    adapter = TypeAdapter(Settings)
    return lambda: adapter.validate_python(VALUES)


def cattrs_check() -> Callable[[], Any]:
    import re

    import attrs
    import cattrs

    def between(low: float, high: float) -> Any:
        return [attrs.validators.ge(low), attrs.validators.le(high)]

    optional = attrs.validators.optional

    @attrs.frozen(kw_only=True)
    class Settings:
        model: str
        stems: tuple[str, ...]
        device: str = attrs.field(validator=attrs.validators.matches_re(re.compile(DEVICE)))
        shifts: int = attrs.field(validator=between(0, 20))
        overlap: float = attrs.field(validator=between(0, 0.99))
        segment_seconds: float | None = attrs.field(validator=optional(attrs.validators.ge(1)))
        batch_size: int | None = attrs.field(validator=optional(between(1, 256)))
        precision: Literal["fp32", "fp16", "bf16"] = attrs.field(
            validator=attrs.validators.in_(("fp32", "fp16", "bf16"))
        )

    converter = cattrs.Converter(forbid_extra_keys=True)
    return lambda: converter.structure(VALUES, Settings)


CHECKS = {"msgspec": msgspec_check, "pydantic": pydantic_check, "cattrs": cattrs_check}


def micros(call: Callable[[], Any], number: int = 20000) -> float:
    call()
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def command_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from bridge.pipeline.spec import JobSpec
    from bridge.settings import SeparationSettings

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for name, module in LIBRARIES.items():
        if importlib.util.find_spec(name) is None:
            print(f"{name}: not installed")
            continue
        check = micros(CHECKS[name]())
        print(f"{name}: import +{import_ms(module, args.runs):.1f} ms, settings {check:.2f} us")
    spec = JobSpec(input="/r/a.wav", folder="/r/a", separation=SeparationSettings(shifts=1))
    text = spec.to_json()
    print(f"JobSpec.from_json: {micros(lambda: JobSpec.from_json(text), 2000):.1f} us")

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "config.toml"
        config.write_text(f"[daemon]\nstate_dir = {json.dumps(str(work / 'state'))}\n")
        audio = work / "a.wav"
        with wave.open(str(audio), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(44100)
            out.writeframes(b"\0\0" * 4410)
        command = [sys.executable, "-m", "bridge"]
        for words in (["status"], ["jobs"], ["submit", str(audio)]):
            wall = command_ms([*command, *words, "--config", str(config)], args.runs)
            print(f"stembridge {' '.join(words[:1])}: {wall:.0f} ms")


if __name__ == "__main__":
    main()
