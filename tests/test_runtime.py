"""The process policy every command runs under (`ingest.runtime.run`)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from ingest import runtime


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_run_tunes_the_collector_and_uses_uvloop(gc_restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()

    async def inside() -> str:
        return type(asyncio.get_running_loop()).__module__

    loop_module = runtime.run(inside())
    assert gc.get_threshold() == (200_000, 50, 100)
    assert gc.get_freeze_count() > 0  # what was alive at start is never walked again
    assert loop_module.startswith("uvloop")
