"""The safety of what we write: the output's name comes from the input's base name only and stays in the
output folder; a symlink or hard link is never followed or written through, nor the input overwritten; temp
and staging folders are private; names with spaces and non-ASCII letters are kept; nothing the package runs
is built from input (no shell, no unpickling)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import FRAMES, GOOD_PCAP, GOOD_PCAPNG, REPO, cli, leftovers, packets_of, settings_for

from pktmask_gui.pipeline import Job, output_name, run_job
from pktmask_gui.samplegen import generate


def test_output_name_uses_only_the_base_name_of_the_input_path():
    assert output_name(Path("/x/../evil/cap.pcap")) == "cap-sanitized.pcap"
    assert output_name(Path("noext")) == "noext-sanitized"


@pytest.mark.parametrize("name", ["..\\..\\evil.pcap", "-rf .pcap", "a\nb.pcap", " .pcap", "..pcap",
                                  "x\u202egnp.pcap"])
def test_the_output_name_comes_only_from_the_input_base_name(work, name):
    src = work / "in" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(GOOD_PCAP)
    out = work / "out"
    result = run_job(Job(src, out, ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    assert Path(result.output).parent == out
    stem, ext = os.path.splitext(name)
    assert Path(result.output).name == f"{stem}-sanitized{ext}"
    assert [p for p in work.rglob("*evil*") if p.parent != out and p.parent != src.parent] == []


def test_a_traversal_through_a_relative_input_path_stays_in_the_output_folder(work):
    deep = work / "a" / "b"
    deep.mkdir(parents=True)
    (work / "victim.pcap").write_bytes(GOOD_PCAP)
    src = deep / ".." / ".." / "victim.pcap"
    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok" and Path(result.output) == work / "out" / "victim-sanitized.pcap"


def test_an_existing_output_is_never_overwritten(work):
    out, settings = work / "out", settings_for(work)
    src = work / "a.pcapng"
    generate(src, packets=50, seed=1, fmt="pcapng")
    out.mkdir()
    (out / "a-sanitized.pcapng").write_bytes(b"precious")
    first = run_job(Job(src, out, ["dedup"]), settings)
    second = run_job(Job(src, out, ["dedup"]), settings)
    assert (out / "a-sanitized.pcapng").read_bytes() == b"precious"
    assert Path(first.output).name == "a-sanitized-1.pcapng" and first.renamed
    assert Path(second.output).name == "a-sanitized-2.pcapng"
    assert any("already existed" in w for w in first.warnings)


def test_the_input_is_never_modified_and_an_output_onto_it_is_refused(work):
    settings = settings_for(work)
    src = work / "x-sanitized.pcap"
    generate(src, packets=100, seed=5)
    before = src.read_bytes()
    stat_before = os.stat(src)
    # The planned output for "x" beside the input would be this very file: refused, input intact.
    twin = work / "x.pcap"
    os.link(src, twin)
    result = run_job(Job(twin, None, ["dedup"]), settings)
    assert result.status == "failed" and "overwrite the input" in result.error
    assert src.read_bytes() == before and os.stat(src).st_mtime_ns == stat_before.st_mtime_ns


def test_symlinked_input_pointing_at_the_output_location_is_refused(work):
    out = work / "out"
    out.mkdir()
    precious = out / "cap-sanitized.pcap"              # an earlier output, the symlink's target
    precious.write_bytes(GOOD_PCAPNG)
    link = work / "cap.pcap"
    link.symlink_to(precious)
    result = run_job(Job(link, out, ["dedup"]), settings_for(work))
    assert result.status == "failed" and "overwrite the input" in result.error
    assert precious.read_bytes() == GOOD_PCAPNG
    assert sorted(p.name for p in out.iterdir()) == ["cap-sanitized.pcap"]


def test_an_output_name_taken_by_a_symlink_is_never_followed(work):
    out = work / "out"
    out.mkdir()
    victim = work / "victim.txt"
    victim.write_bytes(b"do not touch")
    src = work / "cap.pcap"
    src.write_bytes(GOOD_PCAP)
    (out / "cap-sanitized.pcap").symlink_to(victim)            # a trap at the planned name
    (out / "cap-sanitized-1.pcap").symlink_to(work / "nowhere")  # a dangling one at the next name
    result = run_job(Job(src, out, ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    assert Path(result.output).name == "cap-sanitized-2.pcap" and not Path(result.output).is_symlink()
    assert victim.read_bytes() == b"do not touch" and not (work / "nowhere").exists()


def test_an_output_name_that_is_a_hard_link_or_symlink_to_the_input_is_refused(work):
    src = work / "cap.pcap"
    src.write_bytes(GOOD_PCAP)
    for kind in ("hard", "sym"):
        out = work / f"out-{kind}"
        out.mkdir()
        target = out / "cap-sanitized.pcap"
        os.link(src, target) if kind == "hard" else target.symlink_to(src)
        result = run_job(Job(src, out, ["dedup"]), settings_for(work))
        assert result.status == "failed" and "overwrite the input" in result.error
        assert src.read_bytes() == GOOD_PCAP
        assert sorted(p.name for p in out.iterdir()) == ["cap-sanitized.pcap"]
    assert leftovers(work / "temp", work) == []


@pytest.mark.parametrize("temp_elsewhere", [False, True], ids=["same-fs", "temp-on-another-fs"])
def test_temp_and_staging_folders_are_private(work, request, temp_elsewhere):
    """The output is staged in the job's 0700 temp dir, or (temp folder on another file system) in a 0700
    staging dir in the output folder: until it is linked into place nobody else can open it."""
    src = work / "in.pcap"
    generate(src, packets=3000, seed=1)
    temp = request.getfixturevalue("other_fs") if temp_elsewhere else work / "temp"
    modes = {}

    def progress(*_):
        for p in list(temp.iterdir()) + list((work / "out").iterdir()):
            if p.name.startswith("pktmask_"):
                modes[p.name.split("_")[1]] = p.stat().st_mode & 0o777
                for q in p.iterdir():
                    if q.is_dir():
                        modes[q.name.split("_")[1]] = q.stat().st_mode & 0o777

    settings = settings_for(work, large_file_threshold_mb=0)
    settings.temp_root = str(temp)
    result = run_job(Job(src, work / "out", ["dedup"]), settings, progress=progress)
    assert result.status == "ok"
    expected = {"pipeline": 0o700, "output": 0o700, "stage": 0o700} if temp_elsewhere else \
        {"pipeline": 0o700, "stage": 0o700}
    assert modes == expected


def test_paths_with_spaces_and_non_ascii_names_are_kept_in_the_output_tree(work):
    folder = work / "my captures" / "Übung ñ 測試"
    folder.mkdir(parents=True)
    (folder / "a b ü.pcap").write_bytes(GOOD_PCAP)
    (folder / "ζ 日本.pcapng").write_bytes(GOOD_PCAPNG)
    out = work / "out put é"
    proc = cli("process", work / "my captures", "-o", out, "--dedup", "--json", "--temp-dir", work / "temp")
    assert proc.returncode == 0, proc.stderr
    outputs = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert outputs == ["Übung ñ 測試/a b ü-sanitized.pcap", "Übung ñ 測試/ζ 日本-sanitized.pcapng"]
    assert [r[0] for r in packets_of(out / "Übung ñ 測試" / "a b ü-sanitized.pcap")] == FRAMES
    assert leftovers(work / "temp", out) == []


def test_the_package_never_runs_a_shell_or_unpickles_data():
    pattern = re.compile(r"shell\s*=\s*True|pickle\.loads?\(|marshal\.loads?\(|(?<![.\w])eval\(|"
                         r"(?<![.\w])exec\(|os\.system\(|yaml\.load\(|shelve\.open\(")
    hits = []
    for path in sorted((REPO / "pktmask_gui").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line.split("#", 1)[0]):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []
