"""The engine over every capture of the shared wild corpus (681 real captures of an IDS test suite): no file
may fail for any reason but damage of its container, and none may end in an internal error. The checker's
verdicts on the outputs are scripts/corpus_check.py's job (see docs/RELIABILITY.md); the bugs it found have
generated regression tests of their own (tests/test_shape.py), which also run on a fresh clone."""
from __future__ import annotations

import shutil

import pytest

from pktmask_gui.pipeline import Job, find_captures, run_job
from pktmask_gui.settings import Settings

from helpers import WILD, leftovers


@pytest.fixture(scope="module")
def wild_copy(tmp_path_factory):
    if not WILD.is_dir():
        pytest.skip(f"the wild corpus is not present at {WILD} (a fresh clone has no ../shared)")
    root = tmp_path_factory.mktemp("pktmask_test_wild")
    for path, _rel in find_captures([WILD]):
        shutil.copyfile(path, root / path.name)
    return root


@pytest.mark.parametrize("stages", [["dedup", "anonymize", "mask"], ["anonymize"], ["mask"]],
                         ids=["all-three", "anonymize", "mask"])
def test_every_wild_capture_succeeds_unless_its_container_is_damaged(wild_copy, tmp_path, stages):
    settings = Settings(temp_root=str(tmp_path))
    out = tmp_path / "out"
    failures = []
    files = sorted(wild_copy.glob("*.pcap*"))
    assert len(files) >= 600
    for path in files:
        result = run_job(Job(input=path, output_dir=out, stages=stages, key_file=None), settings)
        if result.status != "ok" and result.error_kind != "damage":
            failures.append(f"{path.name}: {result.error_kind}: {result.error}")
    assert not failures, "\n".join(failures)
    assert not leftovers(tmp_path)
