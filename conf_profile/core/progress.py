"""The progress line that labeling and inference print while the engines work: users done, rate, ETA.

>>> progress_line(120, 400, 80.0)
'120/400 users (30%), 1.50 users/s, ETA 3m07s'
"""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Compact h/m/s text.

    >>> duration(7), duration(187), duration(3 * 3600 + 65)
    ('7s', '3m07s', '3h01m')
    """
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(done: float, total: int, elapsed_s: float, unit: str = "users") -> str:
    """``done`` of ``total`` with the share, the mean rate since the start and the time left at that rate
    (unknown before the first unit is done).

    >>> progress_line(0, 50, 12.0), progress_line(50, 50, 25.0)
    ('0/50 users (0%), 0.00 users/s, ETA unknown', '50/50 users (100%), 2.00 users/s, ETA 0s')
    """
    n = int(done)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = duration((total - done) / rate) if rate > 0 else "unknown"
    share = int(100 * done / total) if total else 100
    return f"{n:,}/{total:,} {unit} ({share}%), {rate:.2f} {unit}/s, ETA {eta}"
