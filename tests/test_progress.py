"""The progress line of the engine stages (pure core)."""

from __future__ import annotations

from conf_profile.core.progress import duration, progress_line


def test_the_line_shows_done_share_rate_and_time_left() -> None:
    assert progress_line(120, 400, 80.0) == "120/400 users (30%), 1.50 users/s, ETA 3m07s"
    assert progress_line(2.5, 10, 5.0) == "2/10 users (25%), 0.50 users/s, ETA 15s"  # K samples: part users
    assert progress_line(0, 10, 0.0).endswith("ETA unknown")  # nothing done yet: no rate to go by
    assert progress_line(0, 0, 3.0) == "0/0 users (100%), 0.00 users/s, ETA unknown"
    assert progress_line(1_500_000, 2_000_000, 3600.0).startswith("1,500,000/2,000,000 users (75%), 416.67")


def test_durations_read_as_hours_minutes_seconds() -> None:
    assert [duration(s) for s in (0, 59.4, 60, 3599, 3600, 90061)] == ["0s", "59s", "1m00s", "59m59s", "1h00m",
                                                                      "25h01m"]  # fmt: skip
    assert duration(-3) == "0s"
