"""Progress for long commands: a live bar on a TTY, a structured log line now and then off it."""

from __future__ import annotations

import sys
import time
from types import TracebackType

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

log = structlog.get_logger("ingest.progress")


class Progress:
    def __init__(
        self, task: str, total: int | None = None, unit: str = "items", every_s: float = 5.0
    ) -> None:
        self.task, self.total, self.unit, self.every_s = task, total, unit, every_s
        self.done = 0
        self.extra: dict[str, object] = {}
        self._started = time.monotonic()
        self._last_log = self._started
        self._bar: RichProgress | None = None
        self._task_id: object = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),  # the TTY checked above; stdout is for results
                transient=False,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.task, total=self.total, rate="")
        return self

    def advance(self, n: int = 1, **extra: object) -> None:
        self.done += n
        self.extra.update(extra)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        if self._bar is not None:
            details = " ".join(f"{k}={v}" for k, v in self.extra.items())
            self._bar.update(
                self._task_id,  # type: ignore[arg-type]
                advance=n,
                rate=f"{rate:,.0f} {self.unit}/s {details}".rstrip(),
            )
        elif time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            log.info(
                "progress",
                task=self.task,
                done=self.done,
                total=self.total,
                per_s=round(rate, 1),
                **self.extra,
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
