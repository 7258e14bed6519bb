"""Edit → Settings…: validation in words, persistence, Restore Defaults, applied to the next job."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog

from pktmask_gui import settings as settings_mod
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import operations
from pktmask_gui.ui.settings_dialog import SettingsDialog

from ui_helpers import wait_idle


def dialog_for(window, qtbot) -> SettingsDialog:
    d = SettingsDialog(window.settings, window)
    qtbot.addWidget(d)
    return d


def test_invalid_values_are_refused_with_clear_messages(window, ui_env, qtbot):
    d = dialog_for(window, qtbot)
    d.memory_rss_mb.setValue(10)
    d.temp_root.setText(str(ui_env.root / "does-not-exist"))
    d.output_suffix.setText("a/b")
    d.memory_available_pct.setValue(95)
    d.accept()
    assert d.result() != QDialog.Accepted and d.result_settings is None
    assert not d.errors.isHidden()
    text = d.errors.text()
    assert "memory threshold must be 0 (off) or at least 64 MB" in text
    assert "does not exist" in text
    assert "suffix" in text
    assert "90 %" in text
    assert not settings_mod.settings_path().read_text().count('"a/b"')


def test_stage_options_get_a_page_each_and_are_validated(window, qtbot):
    d = dialog_for(window, qtbot)
    titles = [d.tabs.tabText(i) for i in range(d.tabs.count())]
    for stage in operations():
        assert stage.title in titles
        for option in stage.OPTIONS:
            assert (stage.name, option.key) in d.editors
    bad = [e for e in d.editors.values() if e.option.kind in ("cidr_list", "int_list")]
    for editor in bad:
        if editor.option.kind == "cidr_list":
            editor.widget.setPlainText("10.0.0.0/8\nnot-a-network")
        else:
            editor.widget.setText("443, https")
    d.accept()
    if bad:
        assert d.result() != QDialog.Accepted
        for editor in bad:
            assert editor.option.label in d.errors.text()


def test_valid_settings_persist_and_apply_to_the_next_job(window, ui_env, qtbot):
    d = dialog_for(window, qtbot)
    d.output_suffix.setText("-clean")
    d.parallel_jobs.setValue(1)
    d.large_file_threshold_mb.setValue(0)
    d.memory_rss_mb.setValue(2048)
    d.memory_available_pct.setValue(0)
    d.keep_metadata.setChecked(True)
    bools = [e for e in d.editors.values() if e.option.kind == "bool"]
    if bools:
        bools[0].widget.setChecked(not bools[0].option.default)
    d.accept()
    assert d.result() == QDialog.Accepted
    saved = settings_mod.load_settings()
    assert saved == d.result_settings
    assert (saved.output_suffix, saved.parallel_jobs, saved.large_file_threshold_mb) == ("-clean", 1, 0)
    assert (saved.memory_rss_mb, saved.memory_available_pct, saved.keep_metadata) == (2048, 0, True)
    if bools:
        e = bools[0]
        assert saved.stage_options[e.stage.name][e.option.key] == (not e.option.default)
    window.apply_settings(d.result_settings)

    src = ui_env.inputs / "next.pcap"
    generate(src, packets=200, seed=9)
    window.add_paths([src])
    for name, box in window.op_boxes.items():
        box.setChecked(name == "dedup")
    assert window.start()
    wait_idle(qtbot, window)
    row = window.model.rows[0]
    assert row.status == "Done" and Path(row.result.output).name == "next-clean.pcap"
    assert any("hard-linked" in line for line in window.log_panel.visible_lines())   # threshold 0 applied


def test_a_running_job_keeps_its_settings(window, ui_env, qtbot, big_capture):
    window.apply_settings(ui_env.settings(parallel_jobs=1))
    second = ui_env.inputs / "second.pcap"
    generate(second, packets=200, seed=3)
    window.add_paths([big_capture, second])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    qtbot.waitUntil(lambda: window.model.rows[0].status == "Running")
    running = window.controller.runner.worker(window.model.rows[0].id)
    changed = settings_mod.load_settings()
    changed.output_suffix = "-v2"
    window.apply_settings(changed)
    assert running.settings.output_suffix == "-sanitized"     # the running job keeps its copy
    window.cancel_row(window.model.rows[0])
    wait_idle(qtbot, window)
    assert window.model.rows[0].status == "Cancelled"
    assert Path(window.model.rows[1].result.output).name == "second-v2.pcap"


def test_restore_defaults_resets_every_field(window, qtbot):
    d = dialog_for(window, qtbot)
    d.output_suffix.setText("-x")
    d.parallel_jobs.setValue(3)
    d.temp_root.setText("/nonexistent")
    d.keep_metadata.setChecked(True)
    for editor in d.editors.values():
        if editor.option.kind == "bool":
            editor.widget.setChecked(not editor.option.default)
    d.restore_defaults()
    defaults = settings_mod.default_settings()
    collected, problems = d.collect()
    assert problems == []
    assert collected.output_suffix == defaults.output_suffix
    assert collected.parallel_jobs == defaults.parallel_jobs
    assert collected.temp_root == "" and collected.keep_metadata is False
    for (stage, key), editor in d.editors.items():
        assert collected.stage_options[stage][key] == editor.option.default


def test_edit_settings_menu_opens_the_dialog(window, qtbot):
    seen = []

    def close_it():
        dialog = QApplication.activeModalWidget()
        seen.append(type(dialog).__name__)
        dialog.reject()

    QTimer.singleShot(200, close_it)
    window.act_settings.trigger()
    assert seen == ["SettingsDialog"]


def test_anonymize_page_has_the_key_controls(window, qtbot):
    if "anonymize" not in {s.name for s in operations()}:
        return
    d = dialog_for(window, qtbot)
    from PySide6.QtWidgets import QWidget

    box = d.findChild(QWidget, "keyBox")
    assert box is not None
    from pktmask_gui import keys

    key = keys.load_or_create_key()
    assert box.key_text.text() == key.hex()
    assert box.key_text.echoMode() == box.key_text.EchoMode.Password
    box.show_button.setChecked(True)
    assert box.key_text.echoMode() == box.key_text.EchoMode.Normal


def test_key_regenerate_asks_first_and_import_export_round_trip(window, ui_env, qtbot, monkeypatch):
    if "anonymize" not in {s.name for s in operations()}:
        return
    from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

    from pktmask_gui import keys

    d = dialog_for(window, qtbot)
    box = d.findChild(QWidget, "keyBox")
    original = keys.load_or_create_key()
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Cancel))
    box._regenerate()
    assert keys.load_or_create_key() == original            # "Cancel": nothing changes

    exported = ui_env.root / "backup.key"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(exported), "")))
    box._export()
    assert exported.exists()

    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Yes))
    box._regenerate()
    fresh = keys.load_or_create_key()
    assert fresh != original and box.key_text.text() == fresh.hex()

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(exported), "")))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Yes))
    box._import()
    assert keys.load_or_create_key() == original and box.key_text.text() == original.hex()
