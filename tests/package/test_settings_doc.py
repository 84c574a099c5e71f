"""docs/settings.md cannot drift from django_pulse._conf: one row per key of DEFAULTS, with its default value,
and a property on pulse_settings for each."""

from __future__ import annotations

import re
from pathlib import Path

from django_pulse._conf import DEFAULTS, PulseSettings

ROW = re.compile(r"^\| `([A-Z_]+)` \| `(.*?)` \| (.+) \|$", re.MULTILINE)
PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_every_setting_is_documented_once_with_its_default() -> None:
    rows = ROW.findall(PAGE.read_text())
    keys = [key for key, _, _ in rows]
    assert sorted(keys) == sorted(DEFAULTS), (
        f"missing from settings.md: {sorted(DEFAULTS.keys() - set(keys))}; "
        f"not settings: {sorted(set(keys) - DEFAULTS.keys())}"
    )
    assert len(keys) == len(set(keys)), "a key has two rows"
    for key, default, meaning in rows:
        assert eval(default, {"__builtins__": {}}) == DEFAULTS[key], f"{key}: settings.md says {default}"
        assert meaning.strip(), key


def test_descriptions_are_not_copies_of_each_other() -> None:
    meanings = [meaning for _, _, meaning in ROW.findall(PAGE.read_text())]
    repeated = {m for m in meanings if meanings.count(m) > 1}
    assert not repeated, repeated


def test_every_setting_has_a_typed_property() -> None:
    assert all(isinstance(getattr(PulseSettings, key, None), property) for key in DEFAULTS)
