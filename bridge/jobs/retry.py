"""What to try again after a failure that was not the job's fault.

Bad input or settings fail a job at once (its error says what to fix). Running out
of memory retries with half the batch, then on the CPU. Anything unexpected is
retried after :data:`RETRY_DELAYS_SECONDS`, then failed. The daemon's worker applies
this through the job store; ``separate`` applies the memory part in its own process.
"""

from __future__ import annotations

import dataclasses

from bridge.pipeline.spec import JobSpec

#: Waits before the 1st, 2nd and 3rd retry of a job that failed unexpectedly.
RETRY_DELAYS_SECONDS = (5.0, 30.0, 120.0)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or the host) ran out of memory."""
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def smaller(spec: JobSpec) -> JobSpec | None:
    """The spec to retry after running out of memory: half the batch, then the CPU;
    ``None`` when nothing smaller is left."""
    settings = spec.separation
    batch = settings.batch_size
    if batch is None or batch > 1:
        less = dataclasses.replace(settings, batch_size=max(1, (batch or 2) // 2))
    elif settings.device != "cpu":
        less = dataclasses.replace(settings, device="cpu", precision="fp32")
    else:
        return None
    return dataclasses.replace(spec, separation=less)
