"""Progress a person can follow: one line per stage of the study on stderr, rewritten in place on a
terminal (n/N, epoch), printed once when the stage ends elsewhere (a log, `make report | tee`), with
a « running for k min » line at most once a minute in between (FAIRCXR_HEARTBEAT seconds).

The stage being run is remembered, so an interrupt can say where it stopped. Silent inside a
Jupyter kernel (the documents show results, not progress) and with FAIRCXR_PROGRESS=0.
Lightning's own per-epoch bars are shown only with FAIRCXR_VERBOSE=1 (`--verbose`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

PROGRESS_ENV = "FAIRCXR_PROGRESS"


VERBOSE_ENV = "FAIRCXR_VERBOSE"


HEARTBEAT_ENV = "FAIRCXR_HEARTBEAT"  # seconds between two « still running » lines in a log (default 60)


_stages: list[Stage] = []


_last: list[str] = []  # the stage that was running when the last one failed (for the interrupt message)


def enabled() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") != "0" and "ipykernel" not in sys.modules


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def _live() -> bool:
    return sys.stderr.isatty()


class Stage:
    """One stage: `update` rewrites its line on a terminal; `milestone` also prints in a log."""

    def __init__(self, name: str):
        self.name, self.detail, self.t0, self.closed = name, "", time.perf_counter(), False
        self.beat = self.t0  # the last line written to a log (a terminal is rewritten instead)

    def _write(self, text: str, end: str) -> None:
        if enabled():
            sys.stderr.write(("\r\033[K" if _live() else "") + text + end)
            sys.stderr.flush()

    def update(self, detail: str, extra: str = "") -> None:
        """Rewrite the line (on a terminal); `extra` (e.g. the epoch) is shown but not kept."""
        self.detail = detail
        if _live():
            self._write(f"{self.name}: {detail}{' ' + extra if extra else ''}", "")
        elif time.perf_counter() - self.beat >= _heartbeat():  # a log: a line a minute at most, so a long
            self.beat = time.perf_counter()  # training shows it is alive without filling the log
            minutes = (self.beat - self.t0) / 60
            self._write(f"{self.name}: {detail}{' ' + extra if extra else ''} (running for {minutes:.0f} min)", "\n")

    def milestone(self, detail: str) -> None:
        self.detail = detail
        self._write(f"{self.name}: {detail}", "\n")

    def done(self, detail: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.t0
        self.detail = detail or self.detail
        self._write(f"{self.name}: {self.detail + ', ' if self.detail else ''}{seconds:.1f} s", "\n")


@contextlib.contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Run a stage; its line ends with the time taken (call `done(detail)` to say what it did)."""
    current = Stage(name)
    if not _stages:
        _last.clear()  # a new top-level stage: forget where an earlier one stopped
    _stages.append(current)
    finished = False
    try:
        yield current
        finished = True
    finally:
        _stages.pop()
        if finished:
            current.done()
        elif not _last:
            _last.append(f"{name} ({current.detail})" if current.detail else name)
            if _live() and enabled():
                sys.stderr.write("\n")


def update(detail: str) -> None:
    """Update the innermost running stage, if any (lower layers report without knowing the stage)."""
    if _stages:
        _stages[-1].update(detail)


def extra(text: str) -> None:
    """Show `text` after the innermost stage's detail (e.g. "epoch 3/15"), on a terminal only."""
    if _stages:
        _stages[-1].update(_stages[-1].detail, text)


def heartbeat(text: str) -> None:
    """`extra(text)` in a log when a minute has passed since its last line (nothing on a terminal: the
    epoch line is rewritten at each epoch's end already)."""
    if _stages and not _live():  # `Stage.update` writes to a log only when the heartbeat is due
        _stages[-1].update(_stages[-1].detail, text)


def _heartbeat() -> float:
    try:
        return float(os.environ.get(HEARTBEAT_ENV, "60"))
    except ValueError:
        return 60.0


def note(text: str) -> None:
    """One line for the user outside any stage's line (a caveat), in a terminal and in a log alike."""
    if enabled():
        if _live():
            sys.stderr.write("\r\033[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def milestone(detail: str) -> None:
    """A line kept in the log too (e.g. one per network trained)."""
    if _stages:
        _stages[-1].milestone(detail)


def interrupted_stage() -> str | None:
    """The stage an exception (an interrupt) left, or the one running now."""
    if _last:
        return _last[0]
    return _stages[-1].name if _stages else None


class Laps:
    """Seconds spent in each named step: `lap = Laps()`, then `lap("step")` after each step; `lap.timings`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name], self._clock = now - self._clock, now
