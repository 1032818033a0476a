"""A study's progress (study/progress.py): every job's steps and the study's share done with the time left."""

import io
import sys

import pytest

from differentiable_market import console
from differentiable_market.study.progress import QueueReporter, StudyProgress


def test_without_a_terminal_each_job_reports_its_quarters_with_the_studys_share(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    lines: list[str] = []
    p = StudyProgress([("a", 8, 0), ("b", 8, 0)], bars=True, log=lines.append)  # bars asked, no terminal: lines
    assert p.total == 16 and p.done == 0 and p.eta_s() is None
    for step in range(1, 9):
        p.step("a", step, 8)
    assert [line.split(";")[0] for line in lines] == ["  job a: step 2/8", "  job a: step 4/8", "  job a: step 6/8"]
    assert "study 12% done" in lines[0] and "study 38% done" in lines[2] and "left" in lines[0]
    assert p.done == 8 and p.eta_s() is not None and p.eta_s() >= 0
    p.job_done("a")
    assert p.summary().startswith("; study 50% done, about ")
    p.job_done("b")  # a job whose steps were not reported one by one (a Ray task) counts when it ends
    assert p.done == 16 and p.summary() == "; study 100% done"
    assert sys.stderr.getvalue() == ""
    p.close()


def test_a_resumed_study_counts_finished_jobs_as_done_and_quiet_prints_nothing(capsys):
    with console.verbosity(console.QUIET):
        p = StudyProgress([("a", 4, 4), ("b", 4, 0)], bars=False)
        for step in range(1, 5):
            p.step("b", step, 4)
    assert p.start_done == 4 and p.done == 8
    assert capsys.readouterr().out == ""


def test_steps_from_worker_processes_arrive_through_a_queue():
    import queue

    q = queue.Queue()
    report = QueueReporter(q, "fold0-seed1")
    report(3, 10)
    assert q.get_nowait() == ("fold0-seed1", 3, 10)
    import pickle

    assert pickle.loads(pickle.dumps(QueueReporter(None, "x"))).name == "x"  # sent to spawned workers


def test_on_a_terminal_there_is_a_bar_per_running_job_and_one_for_the_study(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    lines: list[str] = []
    p = StudyProgress([("a", 4, 0), ("b", 4, 0)], bars=True, log=lines.append)
    p.step("a", 2, 4)
    p.step("b", 1, 4)
    text = sys.stderr.getvalue()
    assert "study:" in text and "a:" in text and "b:" in text  # drawn (redraws are rate-limited: count below)
    assert p._study_bar.n == 3 and p._job_bars["a"].n == 2 and p._job_bars["b"].n == 1
    p.job_done("a")
    assert "a" not in p._job_bars and p._study_bar.n == 5
    assert lines == []  # no plain lines when bars are drawn
    p.close()
