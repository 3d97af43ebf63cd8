"""Progress bars that also reach batch logs.

In a terminal or a notebook, `progress_bar` is tqdm.auto's bar.  Under `cotlab run` writing to a
log (`cotlab.runs.papermill_progress` sets COTLAB_TEXT_PROGRESS=1), a notebook kernel's bar is a
widget that papermill records once, so a long generation would leave the log silent for minutes:
there it is `TextProgress`, which prints whole lines (papermill copies a cell's output into the
log line by line) at most every COTLAB_PROGRESS_SECONDS (default 30) while work advances.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_SECONDS = 30.0


def text_progress_wanted() -> bool:
    return os.environ.get("COTLAB_TEXT_PROGRESS") == "1"


def progress_interval() -> float:
    return float(os.environ.get("COTLAB_PROGRESS_SECONDS", DEFAULT_SECONDS))


def progress_bar(total: int, desc: str, disable: bool = False, initial: int = 0, unit: str = "it"):
    """tqdm.auto's bar, or a `TextProgress` in a batch log; both have update(n) and close()."""
    if text_progress_wanted():
        return TextProgress(total, desc, disable=disable, initial=initial, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable, initial=initial, unit=unit, leave=False)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TextProgress:
    """`desc: done/total (share) rate, elapsed, ETA` as one printed line, at most every `interval`
    seconds, and a last line when closed.  The rate and ETA count only this run's work, not the
    `initial` items a resumed job found done."""

    def __init__(self, total: int, desc: str, disable: bool = False, initial: int = 0, unit: str = "it",
                 interval: float | None = None, file=None):
        self.total, self.desc, self.disable, self.unit = total, desc, disable, unit
        self.n = self.initial = initial
        self.interval = progress_interval() if interval is None else interval
        self.file = file
        self.start = self.last_print = time.monotonic()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last_print >= self.interval:
            self.last_print = now
            self._print(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        eta = clock((self.total - self.n) / rate) if rate > 0 and self.total else "?"
        return f"{self.desc}: {self.n}/{self.total}{share} {rate:.2f} {self.unit}/s, elapsed {clock(elapsed)}, ETA {eta}"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            elapsed = time.monotonic() - self.start
            rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
            self._print(f"{self.desc}: done {self.n}/{self.total} in {clock(elapsed)} ({rate:.2f} {self.unit}/s)")

    def write(self, text: str) -> None:
        """A message of its own (what tqdm's `write` is; the Trainer logs its metrics with it)."""
        self._print(text)

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
