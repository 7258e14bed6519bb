"""The shared settings file: defaults, validation in words, persistence, damage tolerance, test isolation."""
import json
import os
import sys
import tempfile
from pathlib import Path

from pktmask_gui.settings import Settings, config_dir, load_settings, save_settings


def test_config_dir_is_isolated_in_tests(monkeypatch):
    """The settings folder is a fresh temp folder of this test, not the user's: through the override and
    through the platform's convention too (XDG_CONFIG_HOME, which any library that knows nothing of the
    override reads)."""
    temp = Path(tempfile.gettempdir()).resolve()
    folder = config_dir().resolve()
    assert folder.parent.name.startswith("pktmask_test_config_") and folder.parent.parent == temp
    assert folder.parent.is_dir() and list(folder.parent.iterdir()) == []       # fresh: nothing saved yet
    if sys.platform not in ("win32", "darwin"):                             # where XDG_CONFIG_HOME rules
        monkeypatch.delenv("PKTMASK_CONFIG_DIR")
        assert config_dir().resolve() == folder                              # the convention lands there too


def test_defaults_follow_the_brief():
    s = Settings()
    assert s.large_file_threshold_mb == 200
    assert s.memory_rss_mb == 1024 and s.memory_available_pct == 10
    assert s.parallel_jobs == max(1, os.cpu_count() or 1)
    assert s.temp_root == "" and s.output_suffix == "-sanitized"
    assert s.validate() == []


def test_round_trip_and_atomic_write():
    s = Settings(large_file_threshold_mb=5, parallel_jobs=2, stage_options={"dedup": {}})
    save_settings(s)
    assert load_settings() == s
    assert [p.name for p in config_dir().iterdir()] == ["settings.json"]


def test_damaged_or_mistyped_file_gives_defaults_field_by_field():
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "settings.json").write_text("{not json")
    assert load_settings() == Settings()
    (config_dir() / "settings.json").write_text(json.dumps({"parallel_jobs": "many", "memory_rss_mb": 2048}))
    loaded = load_settings()
    assert loaded.parallel_jobs == Settings().parallel_jobs and loaded.memory_rss_mb == 2048


def test_validation_speaks_in_sentences(workdir):
    bad = Settings(large_file_threshold_mb=-1, memory_rss_mb=10, memory_available_pct=95, parallel_jobs=0,
                   temp_root=str(workdir / "nope"), output_suffix="a/b")
    problems = bad.validate()
    assert len(problems) == 6
    assert all(p.endswith(".") and p[0].isupper() for p in problems)
