"""bench/steal.py: rates rescaled to the cores the host left us, read from /proc/stat."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import steal


def write_stat(path: Path, steal_ticks: int) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  100 0 50 900 0 0 0 {steal_ticks} 0 0\ncpu0 50 0 25 450 0 0 0 0 0 0\n")


def test_stolen_seconds_reads_the_steal_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    stat = tmp_path / "stat"
    write_stat(stat, 250)
    monkeypatch.setattr(steal, "STAT", stat)
    monkeypatch.setattr(steal.os, "sysconf", lambda name: 100)
    assert steal.stolen_seconds() == 2.5


def test_without_proc_stat_nothing_is_stolen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(steal, "STAT", tmp_path / "absent")
    assert steal.stolen_seconds() == 0.0


def test_a_window_forgives_only_the_stolen_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """2 of the 8 core-seconds of 4 s on 2 cores stolen: 100 units of work are 25/s of wall time
    and 25 / (1 - 0.25) per second of the machine that was really there."""
    stat = tmp_path / "stat"
    write_stat(stat, 0)
    clock = iter([10.0, 14.0])
    monkeypatch.setattr(steal, "STAT", stat)
    monkeypatch.setattr(steal.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(steal.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(steal.time, "perf_counter", lambda: next(clock))
    window = steal.Window().start()
    write_stat(stat, 200)  # 2 core-seconds of the 8 the machine had in those 4 s
    window.stop()
    assert window.wall == 4.0
    assert window.stolen == 2.0
    assert window.steal_share == pytest.approx(0.25)
    assert window.steal_free(100) == pytest.approx(100 / (4.0 * 0.75))
