"""The main window against the real engine: drops, queue, Start to Done, summary, UI state."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pktmask_gui.capture import CaptureReader
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import operations

from ui_helpers import copy_in, drop, make_window, wait_idle


def packets(path: Path) -> list[bytes]:
    out = []
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            out.extend(rec[0] for rec in batch if rec[1] >= 0)
    return out


def only(window, *names):
    for name, box in window.op_boxes.items():
        box.setChecked(name in names)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_engine_operation_has_a_checkbox_with_its_description(window):
    stages = operations()
    assert [name for name in window.op_boxes] == [s.name for s in stages]
    for stage in stages:
        box = window.op_boxes[stage.name]
        assert box.text() == stage.title
        assert box.toolTip() == stage.description and stage.description


def test_drop_queues_files_and_folders_and_refuses_the_rest_with_a_reason(window, ui_env):
    a = ui_env.inputs / "a.pcap"
    generate(a, packets=50, seed=1)
    nested = ui_env.inputs / "folder" / "deeper"
    nested.mkdir(parents=True)
    generate(nested / "n.pcapng", packets=50, seed=2, fmt="pcapng")
    (ui_env.inputs / "folder" / "readme.md").write_text("not a capture")
    notes = ui_env.inputs / "notes.txt"
    notes.write_text("not a capture")
    empty = ui_env.inputs / "docs"
    empty.mkdir()

    keep = drop(window.queue_view.viewport(), [a, notes, ui_env.inputs / "folder", empty])
    assert keep[1].isAccepted()
    names = [r.display_name for r in window.model.rows]
    assert names == ["a.pcap", str(Path("deeper") / "n.pcapng")]
    assert window.model.rows[1].rel_dir == Path("deeper")
    assert window.notice.isVisible()
    text = window.notice_text.text()
    assert "notes.txt" in text and "not a capture file" in text
    assert "docs" in text and "holds no .pcap" in text
    log_text = window.log_panel.text()
    assert "Not queued: not a capture file" in log_text and "notes.txt" in log_text

    # The same file again is refused too, visibly; the queue does not grow.
    keep2 = drop(window.queue_view.viewport(), [a])
    assert len(window.model.rows) == 2
    assert "already in the queue" in window.notice_text.text()
    del keep, keep2


def test_the_same_file_by_another_path_is_not_queued_twice(window, ui_env):
    """A file already queued, reached again through a linked folder, a linked file or its folder, is refused
    as already queued; a hard link is another file and is queued."""
    folder = ui_env.inputs / "caps"
    folder.mkdir()
    a = folder / "a.pcap"
    generate(a, packets=20, seed=1)
    os.link(a, folder / "hard.pcap")
    window.add_paths([a])
    (ui_env.inputs / "via").symlink_to(folder, target_is_directory=True)
    (ui_env.inputs / "soft.pcap").symlink_to(a)
    added, refused = window.add_paths([ui_env.inputs / "via" / "a.pcap", ui_env.inputs / "soft.pcap", folder])
    assert added == 1 and [r.path.name for r in window.model.rows] == ["a.pcap", "hard.pcap"]
    assert [(name, reason) for name, reason in refused] == [("a.pcap", "it is already in the queue"),
                                                            ("soft.pcap", "it is already in the queue"),
                                                            ("a.pcap", "it is already in the queue")]


def test_drop_on_the_window_outside_the_queue_queues_too(window, ui_env):
    a = ui_env.inputs / "a.cap"
    generate(a, packets=20, seed=3)
    keep = drop(window, [a])
    assert [r.path for r in window.model.rows] == [a]
    del keep


def test_start_processes_real_captures_to_done_with_a_correct_summary(window, ui_env, qtbot):
    stats = {}
    stats["a.pcap"] = generate(ui_env.inputs / "a.pcap", packets=3000, seed=1, dup_ratio=0.1)
    stats["b.pcapng"] = generate(ui_env.inputs / "b.pcapng", packets=2000, seed=2, fmt="pcapng")
    (ui_env.inputs / "sub").mkdir()
    stats["c.pcap"] = generate(ui_env.inputs / "sub" / "c.pcap", packets=1500, seed=3, dup_ratio=0.2)
    before = {p: digest(p) for p in ui_env.inputs.rglob("*.pcap*")}

    keep = drop(window.queue_view.viewport(), [ui_env.inputs])
    assert len(window.model.rows) == 3
    only(window, "dedup")
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    assert any(r.status == "Running" for r in window.model.rows)
    wait_idle(qtbot, window)

    assert [r.status for r in window.model.rows] == ["Done"] * 3
    expected_out = {"a.pcap": ui_env.out / "a-sanitized.pcap", "b.pcapng": ui_env.out / "b-sanitized.pcapng",
                    "c.pcap": ui_env.out / "sub" / "c-sanitized.pcap"}
    for row in window.model.rows:
        st = stats[row.path.name]
        res = row.result
        assert Path(res.output) == expected_out[row.path.name]
        assert res.packets_in == st["packets"]
        assert res.packets_out == st["packets"] - st["duplicates"]
        assert len(packets(Path(res.output))) == res.packets_out
        assert row.fraction() == 1.0
        assert f"{st['duplicates']:,} duplicate" in window.model.result_text(row)
    assert {p: digest(p) for p in before} == before          # inputs never modified
    assert ui_env.leftovers() == []

    # The summary: one row per file with packets in / out and duplicates removed.
    dialog = window.summary_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.title.text().startswith("3 files sanitized")
    summary = dialog.table.model()
    assert summary.rowCount() == 3
    for i, res in enumerate(dialog.results):
        st = stats[Path(res.input).name]
        assert summary.index(i, 0).data() == Path(res.input).name
        assert summary.index(i, 1).data() == "Done"
        assert summary.index(i, 2).data() == f"{st['packets']:,}"
        assert summary.index(i, 3).data() == f"{st['packets'] - st['duplicates']:,}"
        assert summary.index(i, 4).data() == f"{st['duplicates']:,}"
        assert summary.index(i, 5).data()
        assert summary.index(i, 6).data() == Path(res.output).name
        assert f"Remove Dupes: {st['duplicates']:,} duplicate frames removed" in dialog.details_text(res)

    # Exports: JSON is the CLI's object; HTML names every file.
    dialog.export_to(ui_env.root / "summary.json", "json")
    dialog.export_to(ui_env.root / "summary.html", "html")
    data = json.loads((ui_env.root / "summary.json").read_text())
    assert data["ok"] is True
    assert sorted(Path(f["input"]).name for f in data["files"]) == sorted(stats)
    for f in data["files"]:
        st = stats[Path(f["input"]).name]
        assert f["status"] == "ok" and f["packets_out"] == st["packets"] - st["duplicates"]
        assert f["stages"]["dedup"]["duplicates_removed"] == st["duplicates"]
    page = (ui_env.root / "summary.html").read_text()
    assert all(name in page for name in stats) and "<table>" in page
    assert window.recent_outputs()[0] in {str(ui_env.out), str(ui_env.out / "sub")}
    del keep


def test_default_output_goes_beside_each_input_and_failures_say_why(window, ui_env, qtbot):
    good = ui_env.inputs / "good.pcap"
    generate(good, packets=500, seed=5)
    bad = ui_env.inputs / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all, just text" * 10)
    window.add_paths([good, bad])
    only(window, "dedup")
    assert window.out_beside.isChecked()
    assert window.start()
    wait_idle(qtbot, window)
    rows = {r.path.name: r for r in window.model.rows}
    assert rows["good.pcap"].status == "Done"
    assert Path(rows["good.pcap"].result.output) == ui_env.inputs / "good-sanitized.pcap"
    assert rows["bad.pcap"].status == "Failed"
    reason = window.model.result_text(rows["bad.pcap"])
    assert reason.startswith("Not a pcap or pcapng capture")
    assert not (ui_env.inputs / "bad-sanitized.pcap").exists()
    assert ui_env.leftovers() == []
    summary = window.summary_dialog.table.model()
    failed_row = [i for i in range(summary.rowCount()) if summary.index(i, 1).data() == "Failed"]
    assert failed_row and summary.index(failed_row[0], 5).data().startswith("Not a pcap or pcapng capture")
    assert "Failed" in window.log_panel.text() or "failed" in window.log_panel.text()


def test_corpus_captures_run_through_every_operation(window, ui_env, qtbot, corpus_dir):
    names = ["zeek__tcp_ssh-dups.pcap", "tcpdump__pptp.pcap", "zeek__pcapng-multi-interface.pcapng"]
    for name in names:
        copy_in(corpus_dir / name, ui_env.inputs)
    window.add_paths([ui_env.inputs])
    only(window, *window.op_boxes)          # every operation the engine offers
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    wait_idle(qtbot, window)
    for row in window.model.rows:
        assert row.status in ("Done", "Failed")
        if row.status == "Done":
            assert Path(row.result.output).is_file()
            assert set(row.result.stages) >= {"dedup"}
        else:
            assert row.error                 # a failure always says why
    ssh = next(r for r in window.model.rows if r.path.name == "zeek__tcp_ssh-dups.pcap")
    assert ssh.status == "Done" and ssh.result.stages["dedup"]["duplicates_removed"] == 280
    assert ui_env.leftovers() == []


def test_queue_row_actions_remove_cancel_and_requeue(window, ui_env):
    files = []
    for i in range(3):
        files.append(ui_env.inputs / f"f{i}.pcap")
        generate(files[-1], packets=10, seed=i)
    window.add_paths(files)
    window.queue_view.selectRow(0)
    window.remove_selected()
    assert [r.path.name for r in window.model.rows] == ["f1.pcap", "f2.pcap"]
    row = window.model.rows[0]
    window.cancel_row(row)
    assert row.status == "Cancelled" and window.model.result_text(row) == "Cancelled before it started"
    window._requeue([row])
    assert row.status == "Queued"
    assert window.model.result_text(row) == "Will be saved as f1-sanitized.pcap"
    window.clear_finished()
    assert len(window.model.rows) == 2


def test_start_needs_an_operation(window, ui_env, qtbot, monkeypatch):
    generate(ui_env.inputs / "x.pcap", packets=10, seed=1)
    window.add_paths([ui_env.inputs / "x.pcap"])
    only(window)
    assert not window.start_button.isEnabled()
    assert "operation" in window.start_button.toolTip()
    warnings = []
    monkeypatch.setattr(window, "_warn", lambda title, text: warnings.append(text))
    assert window.start() is False
    assert warnings and "at least one operation" in warnings[0]


def test_window_state_and_last_folders_are_remembered(qtbot, ui_env):
    first = make_window(qtbot, size=(1010, 640))
    only(first, "dedup", "mask")
    first.out_folder.setChecked(True)
    first.out_path.setText(str(ui_env.out))
    first.close()
    second = make_window(qtbot, size=(900, 580), operations=())
    second.hide()
    second._restore_state()
    assert second.out_folder.isChecked()
    assert second.out_path.text() == str(ui_env.out)
    assert [n for n, b in second.op_boxes.items() if b.isChecked()] == \
        [n for n in second.op_boxes if n in ("dedup", "mask")]
    assert second.size().width() == 1010 and second.size().height() == 640
    second.close()


def test_ui_state_lives_in_the_private_config_folder(window):
    import os

    assert window.state.fileName().startswith(os.environ["PKTMASK_CONFIG_DIR"])


def test_about_names_the_versions():
    import PySide6

    from pktmask_gui import __version__
    from pktmask_gui.ui.main_window import about_html

    text = about_html()
    assert __version__ in text and PySide6.__version__ in text and "Python" in text


def test_fits_a_1366x768_screen(qtbot, ui_env):
    from PySide6.QtWidgets import QApplication

    from pktmask_gui.ui import MainWindow

    screen = QApplication.primaryScreen().availableGeometry()
    fresh = MainWindow()                          # no saved geometry: the default size suits the screen
    qtbot.addWidget(fresh)
    assert fresh.width() <= screen.width() and fresh.height() <= screen.height()
    assert fresh.width() >= 900 and fresh.height() >= 580
    fresh.close()
    w = make_window(qtbot, size=(1366, 728))
    assert w.minimumSizeHint().width() <= 1366 and w.minimumSizeHint().height() <= 728
    assert w.minimumWidth() <= 1366 and w.minimumHeight() <= 728
    for button in (w.start_button, w.cancel_button, w.open_button):
        assert button.isVisible()
        assert button.geometry().right() <= w.centralWidget().width()
    w.close()


def test_shortcuts(window):
    assert window.act_add_files.shortcut().toString() == "Ctrl+O"
    assert window.act_start.shortcut().toString() == "Ctrl+Return"
    assert window.act_quit.shortcut().toString() == "Ctrl+Q"
    assert window.act_settings.shortcut().toString() == "Ctrl+,"
    assert not window.windowIcon().isNull()
    assert window.statusBar().currentMessage() or window.counts_label.text()
