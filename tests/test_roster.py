"""Rostered shifts: overnight, across both DST changes, and through the agent list."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from line_config import LineConfigError, ShiftConfig, parse_line_config
from tests.conftest import SAMPLE_CONFIG, load_yaml

TALLINN = ZoneInfo("Europe/Tallinn")
NIGHT = ShiftConfig(days=[0, 1, 2, 3, 4, 5, 6], start="22:00", end="06:00")


def _at(*args, fold=0) -> datetime:
    return datetime(*args, tzinfo=TALLINN, fold=fold)


# Spring: 2026-03-29 03:00 → 04:00 (EET → EEST). Autumn: 2026-10-25 04:00 → 03:00.
@pytest.mark.parametrize("night", [(2026, 3, 28), (2026, 10, 24), (2026, 12, 1)])
def test_night_shift_is_on_at_23_30_and_02_00_and_off_at_06_30(night):
    from routing.roster import on_duty
    y, m, d = night
    assert on_duty([NIGHT], _at(y, m, d, 23, 30), "Europe/Tallinn")
    assert on_duty([NIGHT], _at(y, m, d + 1, 2, 0), "Europe/Tallinn")
    assert on_duty([NIGHT], _at(y, m, d + 1, 5, 59), "Europe/Tallinn")
    assert not on_duty([NIGHT], _at(y, m, d + 1, 6, 30), "Europe/Tallinn")
    assert not on_duty([NIGHT], _at(y, m, d, 21, 59), "Europe/Tallinn")


def test_night_shift_lengths_follow_the_clock_changes():
    from routing.roster import on_duty

    def hours_on(start_utc: datetime) -> int:
        return sum(on_duty([NIGHT], start_utc.replace(minute=30) + _hour * i, "Europe/Tallinn")
                   for i in range(14))

    from datetime import timedelta
    _hour = timedelta(hours=1)
    # 22:00 local is 20:00 UTC in winter, 19:00 UTC in summer.
    assert hours_on(datetime(2026, 3, 28, 19, tzinfo=timezone.utc)) == 7   # spring night
    assert hours_on(datetime(2026, 10, 24, 18, tzinfo=timezone.utc)) == 9  # autumn night
    assert hours_on(datetime(2026, 12, 1, 19, tzinfo=timezone.utc)) == 8


def test_both_repeated_hours_of_the_autumn_night_are_on_duty():
    from routing.roster import on_duty
    assert on_duty([NIGHT], _at(2026, 10, 25, 3, 30, fold=0), "Europe/Tallinn")
    assert on_duty([NIGHT], _at(2026, 10, 25, 3, 30, fold=1), "Europe/Tallinn")


def test_day_shifts_only_on_their_days():
    from routing.roster import on_duty
    weekday = ShiftConfig(days=[0, 1, 2, 3, 4], start="09:00", end="17:00")
    assert on_duty([weekday], _at(2026, 12, 4, 16, 59), "Europe/Tallinn")      # Friday
    assert not on_duty([weekday], _at(2026, 12, 5, 10, 0), "Europe/Tallinn")   # Saturday
    # A Sunday-night shift (starts Sunday) covers early Monday but not early Sunday.
    sunday_night = ShiftConfig(days=[6], start="22:00", end="06:00")
    assert on_duty([sunday_night], _at(2026, 12, 7, 2, 0), "Europe/Tallinn")
    assert not on_duty([sunday_night], _at(2026, 12, 6, 2, 0), "Europe/Tallinn")


@pytest.mark.parametrize("shift,field", [
    ({"days": [7], "start": "22:00", "end": "06:00"}, "days"),
    ({"days": [1], "start": "22:00", "end": "22:00"}, "different start and end"),
    ({"days": [1], "start": 1320, "end": "06:00"}, "start"),
])
def test_bad_shifts_are_refused_with_the_field_named(shift, field):
    document = load_yaml(SAMPLE_CONFIG)
    document["agents"][0]["shifts"] = [shift]
    with pytest.raises(LineConfigError, match=field):
        parse_line_config(document)


def test_agent_list_says_who_is_rostered(app, tmp_path, clock):
    import yaml
    document = load_yaml(SAMPLE_CONFIG)
    document["agents"][0]["shifts"] = [{"days": [1], "start": "09:00", "end": "17:00"}]
    document["agents"][1]["shifts"] = [{"days": [1], "start": "22:00", "end": "06:00"}]
    path = tmp_path / "roster.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["config", "load", str(path)]).exit_code == 0
    token = runner.invoke(args=["tokens", "create", "--role", "supervisor"]).output.strip()
    agents = app.test_client().get("/api/agents", headers={"Authorization": f"Bearer {token}"})
    rostered = {a["name"]: a["rostered"] for a in agents.get_json()["agents"]}
    # The clock is Tuesday 1 December 2026, 12:00 in Tallinn.
    assert (rostered["Mari"], rostered["Jaan"], rostered["Olga"]) == (True, False, None)
