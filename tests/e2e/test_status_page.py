"""The status page in a real browser (headless Chromium): after a drain, the numbers it draws
are the numbers the database holds. Run by `make test-e2e`, not `make test`."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.simulator import Simulator
from tests.helpers import API_KEY, api_settings
from tests.ops_support import prepare_faults, served_worker

RUNS = 36
# The flags that work as root in a container: no sandbox, no GPU, nothing phoned home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--hide-scrollbars",
)


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium: apt-get install -y chromium (.ci/run does this when it is absent)")


async def chromium(url: str, *args: str) -> bytes:
    """Run headless Chromium on `url` with a fresh profile; its stdout."""
    with tempfile.TemporaryDirectory(prefix="hr-ingest-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium_path(),
            *FLAGS,
            f"--user-data-dir={profile}",
            # Virtual time runs the page's timers (and waits for its fetches) without waiting
            # in real time: two polls of /status.json happen within this budget.
            "--virtual-time-budget=4000",
            *args,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def cells(self) -> list[str]:
        return [c.text.strip() for c in self.children if c.tag == "td"]


_VOID = {"meta", "link", "br", "img", "input", "line", "rect", "hr"}


class Page(HTMLParser):
    """The rendered DOM: elements by id, every element in order, with text and children."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, Element] = {}
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        if self._open:
            self._open[-1].children.append(el)
        self.elements.append(el)
        if "id" in el.attrs:
            self.by_id[el.attrs["id"]] = el
        if tag not in _VOID:
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el.text += data

    def number(self, element_id: str) -> int:
        return int(self.by_id[element_id].text.strip().replace(",", ""))

    def rows(self, tbody_id: str) -> list[Element]:
        return [c for c in self.by_id[tbody_id].children if c.tag == "tr"]


pytestmark = pytest.mark.sim(runs=RUNS, seed=5)


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql))]


async def test_status_page_renders_what_the_database_holds(
    settings: Settings, engine: AsyncEngine, sim: Simulator, tmp_path: Path
) -> None:
    gone, _ = await prepare_faults(sim, engine)
    async with served_worker(api_settings(settings, sim), engine) as served:
        await served.worker.run()
        served.server.poller.force_drift()
        await served.server.poller.refresh()
        url = f"{served.server.url}/"
        dom = await chromium(url, "--dump-dom")
        shot = Path(os.environ.get("HR_INGEST_E2E_SCREENSHOT", tmp_path / "status.png"))
        await chromium(url, f"--screenshot={shot}", "--window-size=1280,1000")

    page = Page()
    page.feed(dom.decode())
    body = next(e for e in page.elements if e.tag == "body")
    assert int(body.attrs.get("data-rendered", "0")) >= 1, "the page never drew /status.json"

    counts = dict(await rows(engine, "SELECT state, count(*) FROM ingest_queue GROUP BY state"))
    for state in ("pending", "running", "done", "dead"):
        assert page.number(f"q-{state}") == counts.get(state, 0), state
    assert counts["dead"] == 1 and counts["done"] >= RUNS - 10

    # The chart: one bar group per minute of the last hour, adding up to the hour's total.
    (done_hour,) = (
        await rows(
            engine,
            "SELECT count(*) FROM ingest_queue WHERE state = 'done'"
            " AND finished_at > now() - interval '1 hour'",
        )
    )[0]
    assert page.number("done-hour") == done_hour
    bars = [e for e in page.elements if e.tag == "g" and "data-minute" in e.attrs]
    assert len(bars) == 60
    assert sum(int(b.attrs["data-done"]) for b in bars) == done_hour
    assert sum(int(b.attrs["data-dead"]) for b in bars) == page.number("dead-hour") == 1

    dead = await rows(engine, "SELECT run_id::text, kind, reason FROM dead_letters")
    shown = page.rows("dead-letters")
    assert [r.attrs["data-run-id"] for r in shown] == [str(gone)] == [d[0] for d in dead]
    assert shown[0].cells()[-2:] == [dead[0][1], dead[0][2]] == ["not_found", dead[0][2]]
    # Dead runs grouped by kind, named for a person; the worker's failed attempts likewise.
    by_kind = page.rows("dead-kinds")
    assert [(r.attrs["data-kind"], r.cells()) for r in by_kind] == [
        ("not_found", ["HTTP 404", "1"])
    ]
    worker = page.by_id["worker"].text
    assert "failed: HTTP 404" in worker and "failed: HTTP 5xx" in worker

    drift = dict(
        await rows(
            engine,
            "SELECT d->>'kind', count(DISTINCT run_id) FROM run_payloads,"
            " jsonb_array_elements(drift) d GROUP BY 1",
        )
    )
    drift_rows = {k: int(n.replace(",", "")) for k, n in (r.cells() for r in page.rows("drift"))}
    assert drift_rows == drift and drift

    assert API_KEY not in dom.decode()
    assert await asyncio.to_thread(lambda: shot.stat().st_size) > 10_000
