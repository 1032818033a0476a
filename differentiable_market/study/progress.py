"""A study's progress: the training steps of every job, each running job's and the whole study's, with estimated
times left.

On a terminal: one bar for the study (every job's steps; its ETA is the study's) and one per running job (its steps
and ETA). Elsewhere (a log file, ``--no-progress``): a plain line when a job passes each quarter of its steps, with
the study's share done and the time left, so a log shows progress without carriage-return junk. ``--quiet`` shows
neither.

Executors report steps through ``step(job_name, step, steps)``: the study's own process calls it directly, worker
processes through a queue (``QueueReporter``), and the Ray executor once per finished job (``job_done``), since its
tasks run on other machines.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import console

QUARTERS = 4  # plain progress lines per job without a terminal


class StudyProgress:
    """Steps of the jobs ``(name, steps, steps already done)`` of a study (see the module docstring)."""

    def __init__(self, jobs: Iterable[tuple[str, int, int]], bars: bool, log: Callable[[str], None] = console.say,
                 ) -> None:
        self.jobs = {name: [steps, done] for name, steps, done in jobs}
        self.total = sum(s for s, _ in self.jobs.values())
        self.start_done = sum(min(d, s) for s, d in self.jobs.values())
        self.started = time.perf_counter()
        self.bars = console.bars_enabled(bars)
        self.lines = not self.bars
        self.log = log
        self._stdout = sys.stdout  # a job in this process writes its own log with stdout redirected to train.log
        self._study_bar = None
        self._job_bars: dict[str, Any] = {}
        self._next_line: dict[str, int] = {}
        if self.bars:
            self._study_bar = console.progress_bar(self.total, initial=self.start_done, desc="study", position=0)

    @property
    def done(self) -> int:
        return sum(min(d, s) for s, d in self.jobs.values())

    def eta_s(self) -> float | None:
        """Seconds left for the whole study at the rate of the steps run so far in this process (None before any)."""
        ran = self.done - self.start_done
        if ran <= 0:
            return None
        return (self.total - self.done) * (time.perf_counter() - self.started) / ran

    def step(self, name: str, step: int, steps: int) -> None:
        """Job ``name`` finished training step ``step`` of ``steps``."""
        entry = self.jobs.setdefault(name, [steps, 0])
        entry[0] = steps
        advance = max(0, min(step, steps) - entry[1])
        entry[1] = max(entry[1], min(step, steps))
        if self.bars:
            bar = self._job_bars.get(name)
            if bar is None:
                bar = console.progress_bar(steps, initial=step - advance, desc=name,
                                           position=1 + len(self._job_bars), leave=False)
                self._job_bars[name] = bar
            bar.update(advance)
            if self._study_bar is not None:
                self._study_bar.update(advance)
        elif self.lines:
            quarter = max(1, steps // QUARTERS)
            nxt = self._next_line.setdefault(name, quarter * (1 + (step - advance) // quarter))
            if step >= nxt and step < steps:
                self._next_line[name] = quarter * (1 + step // quarter)
                eta = self.eta_s()
                with contextlib.redirect_stdout(self._stdout):
                    self.log(f"  job {name}: step {step}/{steps}; study {100 * self.done / max(self.total, 1):.0f}% "
                             "done" + (f", about {console.format_duration(eta)} left" if eta is not None else ""))

    def job_done(self, name: str) -> None:
        """Job ``name`` finished (all its steps, whether or not they were reported one by one)."""
        steps, done = self.jobs.get(name, [0, 0])
        if done < steps:
            self.step(name, steps, steps)
        bar = self._job_bars.pop(name, None)
        if bar is not None:
            bar.close()

    def summary(self) -> str:
        """", study 40% done, about 12 min left" for the line of a finished job."""
        eta = self.eta_s()
        return (f"; study {100 * self.done / max(self.total, 1):.0f}% done"
                + (f", about {console.format_duration(eta)} left" if eta is not None and self.done < self.total else ""))

    def close(self) -> None:
        for bar in self._job_bars.values():
            bar.close()
        self._job_bars.clear()
        if self._study_bar is not None:
            self._study_bar.close()
            self._study_bar = None


class QueueReporter:
    """A picklable ``on_step(step, steps)`` for a job in a worker process: puts ``(job name, step, steps)`` on a
    queue the study's process reads."""

    def __init__(self, queue: Any, name: str) -> None:
        self.queue, self.name = queue, name

    def __call__(self, step: int, steps: int) -> None:
        self.queue.put((self.name, step, steps))
