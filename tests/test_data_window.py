"""The nightly data window: which days of raw logs a run reads (storage.select_days / list_partitions)."""

import pytest

from shoprec.data.storage import StorageError, list_partitions, select_days

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-05", "2026-11-06"]


def test_default_reads_everything():
    assert select_days(DAYS) == DAYS


def test_lookback_counts_calendar_days_back_from_the_newest_day():
    assert select_days(DAYS, lookback_days=2) == ["2026-11-05", "2026-11-06"]
    assert select_days(DAYS, lookback_days=4) == ["2026-11-03", "2026-11-05", "2026-11-06"]  # 11-04 has no logs


def test_start_end_and_lookback_together():
    assert select_days(DAYS, start="2026-11-02", end="2026-11-05") == ["2026-11-02", "2026-11-03", "2026-11-05"]
    assert select_days(DAYS, lookback_days=2, end="2026-11-03") == ["2026-11-02", "2026-11-03"]
    assert select_days(DAYS, lookback_days=10, start="2026-11-03") == ["2026-11-03", "2026-11-05", "2026-11-06"]


def test_undated_files_are_always_read():
    assert select_days(["", *DAYS], lookback_days=1) == ["", "2026-11-06"]


def test_bad_windows_say_what_is_wrong():
    with pytest.raises(ValueError, match="'11/03/2026' is not an ISO date"):
        select_days(DAYS, start="11/03/2026")
    with pytest.raises(ValueError, match="after end date"):
        select_days(DAYS, start="2026-11-05", end="2026-11-01")
    with pytest.raises(StorageError, match=r"days there: 2026-11-01\.\.2026-11-06"):
        select_days(DAYS, start="2026-12-01")
    with pytest.raises(ValueError, match=">= 0"):
        select_days(DAYS, lookback_days=-1)


def test_list_partitions_applies_the_window(tiny_shop):
    every = list_partitions(str(tiny_shop))
    assert len(every) == 5
    assert list_partitions(str(tiny_shop), lookback_days=2) == every[-2:]
