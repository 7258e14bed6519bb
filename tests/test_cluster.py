"""`process --scheduler`: batches on a real Dask scheduler with two real worker processes (never a mock).

The scheduler and the workers are started by their own commands (``python -m distributed.cli.dask_scheduler``
/ ``dask_worker``, as ``dask scheduler`` / ``dask worker`` do), each worker with a temp folder of its own
(TMPDIR) so that leftovers can be looked for where the workers write. Skipped where ``distributed`` (the
optional extra ``cluster``) is not installed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the optional extra 'cluster' (distributed) is not installed")

from helpers import leftovers, owner_pid  # noqa: E402
from pktmask_gui.samplegen import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPS = ("--dedup", "--anonymize", "--mask")


@pytest.fixture
def cluster(dask_cluster):
    return dask_cluster


@pytest.fixture(scope="module")
def big_inputs():
    """Four captures whose tasks take about a second each on a worker (time to kill one or cancel)."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_cluster_in_") as name:
        folder = Path(name)
        for i in range(4):
            generate(folder / f"big{i}.pcap", packets=20000, seed=100 + i)
        yield folder


def cli(*args, wait=True, env_extra=None, **kwargs):
    cmd = [sys.executable, "-m", "pktmask_gui", "process", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180, **kwargs)


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def writing_worker(out: Path, worker_tmp: Path, timeout: float = 60) -> int | None:
    """The pid of the process running the first task seen writing its output (a task mid-run): in a staging
    dir of ``out`` (its marker names the worker) or in its pipeline dir in the workers' temp folder (its name
    does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for marker in out.glob("pktmask_output_*/pktmask-owner.json"):
            try:
                return int(json.loads(marker.read_text())["owners"][-1]["pid"])
            except (OSError, ValueError, KeyError, IndexError):
                pass
        for pipeline in worker_tmp.glob("pktmask_pipeline_*"):
            try:
                if any("-sanitized" in p.name for p in pipeline.iterdir()):
                    return owner_pid(pipeline)
            except OSError:
                pass
        time.sleep(0.02)
    return None


def test_outputs_equal_the_local_run_byte_for_byte(cluster, workdir):
    src = workdir / "in"
    (src / "sub").mkdir(parents=True)
    generate(src / "a.pcap", packets=1500, seed=1)
    generate(src / "sub" / "b.pcapng", packets=1500, seed=2, fmt="pcapng", metadata=True)
    generate(src / "c.pcap", packets=800, seed=3, dup_ratio=0.2)
    import gzip
    (src / "d.pcap.gz").write_bytes(gzip.compress((src / "c.pcap").read_bytes()))
    local = cli(src, "-o", workdir / "local", *OPS, "--pseudonymize-names", "--jobs", "1", "--json")
    assert local.returncode == 0, local.stderr
    remote = cli(src, "-o", workdir / "remote", *OPS, "--pseudonymize-names", "--scheduler", cluster.address,
                 "--json")
    assert remote.returncode == 0, remote.stderr
    expected = outputs(workdir / "local")
    assert len(expected) == 4 and outputs(workdir / "remote") == expected
    local_files = json.loads(local.stdout)["files"]
    remote_files = json.loads(remote.stdout)["files"]
    assert [f["input"] for f in remote_files] == [f["input"] for f in local_files]
    for lf, rf in zip(local_files, remote_files):
        assert rf["output"] == lf["output"].replace("local", "remote")
        assert {k: v for k, v in rf.items() if k not in ("output", "elapsed_s")} == \
               {k: v for k, v in lf.items() if k not in ("output", "elapsed_s")}
    assert remote.stderr.count("ok: ") == 4 and "Dask scheduler" in remote.stderr
    # the key went only inside the tasks: never written on a worker, never in a log
    key = (Path(os.environ["PKTMASK_CONFIG_DIR"]) / "cryptopan.key").read_bytes()
    logs = cluster.log_text() + remote.stderr.encode()
    assert key not in logs and key.hex().encode() not in logs and key.hex().upper().encode() not in logs
    assert not cluster.worker_config.exists()
    assert leftovers(workdir, cluster.worker_tmp) == []


def test_a_worker_killed_mid_task_leaves_no_partial_output_and_the_run_completes(cluster, big_inputs, workdir):
    local = cli(big_inputs, "-o", workdir / "local", *OPS, "--jobs", "1")
    assert local.returncode == 0, local.stderr
    run = cli(big_inputs, "-o", workdir / "remote", *OPS, "--scheduler", cluster.address, "--json", wait=False)
    try:
        victim = writing_worker(workdir / "remote", cluster.worker_tmp)
        assert victim in cluster.worker_pids(), "no task of the run was seen writing"
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, stderr
    assert all(f["status"] == "ok" for f in json.loads(stdout)["files"])
    # the retried task wrote the one output; nothing partial, nothing staged, no temp dir of the dead worker
    assert outputs(workdir / "remote") == outputs(workdir / "local")
    assert leftovers(workdir, cluster.worker_tmp) == []
    cluster.wait_for_workers(2)     # the nanny restarts the killed worker


def test_ctrl_c_cancels_every_task_exits_130_and_leaves_nothing(cluster, big_inputs, workdir):
    more = workdir / "in"
    more.mkdir()
    for i in range(4):      # eight tasks: some still waiting for a worker when Ctrl-C comes
        os.link(big_inputs / f"big{i}.pcap", more / f"big{i}.pcap")
        os.link(big_inputs / f"big{i}.pcap", more / f"copy{i}.pcap")
    run = cli(more, "-o", workdir / "out", *OPS, "--scheduler", cluster.address, "--json", wait=False)
    try:
        assert writing_worker(workdir / "out", cluster.worker_tmp) is not None
        # what the dashboard shows of the run: opaque task names, no file name, no key
        with distributed.Client(cluster.address, set_as_default=False) as client:
            names = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
        assert 0 < len(names) <= 8 and all(re.fullmatch(r"pktmask-[0-9a-f]{12}-[0-7]", n) for n in names), names
        run.send_signal(signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = run.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr
    assert elapsed < 10, elapsed
    files = json.loads(stdout)["files"]
    assert any(f["status"] == "cancelled" for f in files)
    finished = {Path(f["output"]).name for f in files if f["status"] == "ok"}
    assert {p.name for p in (workdir / "out").iterdir()} == finished   # only whole outputs, nothing staged
    assert "Traceback" not in stderr
    # the tasks stopped on the workers: within moments nothing runs there and nothing is left
    with distributed.Client(cluster.address, set_as_default=False) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(client.processing().values()):
            time.sleep(0.1)
        assert not any(client.processing().values())
    assert leftovers(workdir, cluster.worker_tmp) == []


def test_a_path_the_workers_cannot_see_is_a_clear_error(cluster, workdir):
    """The client runs in a mount namespace of its own (unshare), its input on a tmpfs the workers never see."""
    hidden = workdir / "hidden"
    hidden.mkdir()
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -rm (an unprivileged mount namespace) is not available here")
    script = (f"mount -t tmpfs none {hidden} && "
              f"{sys.executable} -m pktmask_gui.samplegen {hidden}/x.pcap --packets 50 --seed 1 >/dev/null 2>&1 && "
              f"{sys.executable} -m pktmask_gui process {hidden}/x.pcap -o {workdir}/out --mask "
              f"--scheduler {cluster.address}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "pktmask-gui" in ln]
    assert "Dask worker" in line and f"cannot see the input {hidden}/x.pcap" in line
    assert "every worker reaches at the same path" in line
    assert list((workdir / "out").iterdir()) == []
    assert leftovers(workdir, cluster.worker_tmp) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux")
def test_a_job_on_a_worker_keeps_its_freed_buffers_despite_the_nannys_trim_setting(cluster, big_inputs, workdir):
    from cluster_helpers import page_faults_of_jobs

    with distributed.Client(cluster.address, timeout=30, set_as_default=False) as client:
        faults = client.submit(page_faults_of_jobs, str(big_inputs / "big0.pcap"), str(workdir), pure=False) \
            .result(timeout=120)
    if faults["setting"] is None:
        pytest.skip("this Dask's nanny no longer sets MALLOC_TRIM_THRESHOLD_ for its workers")
    # without it every buffer above 128 KiB is mapped and unmapped again: ~30,000 faults for this capture
    assert faults["plain"] > 10_000 and faults["streaming"] * 5 < faults["plain"], faults
    assert leftovers(workdir, cluster.worker_tmp) == [] and not cluster.worker_config.exists()


def test_an_unreachable_scheduler_is_one_sentence(workdir):
    src = workdir / "a.pcap"
    generate(src, packets=20, seed=1)
    import socket
    with socket.socket() as s:      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli(src, "-o", workdir / "out", "--mask", "--scheduler", f"tcp://127.0.0.1:{port}")
    assert proc.returncode == 2
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = cli(src, "-o", workdir / "out", "--mask", "--scheduler", "127.0.0.1:8786")
    assert bad.returncode == 2 and "must start with tcp:// or tls://" in bad.stderr


def test_tls_as_the_readme_sets_it_up(workdir):
    """A scheduler and a worker speaking tls:// only, the client set up through Dask's environment variables
    exactly as the README shows; the output is the local run's."""
    from cluster_helpers import Cluster, make_tls_files

    tls = make_tls_files(workdir)
    (workdir / "tls").mkdir()
    cluster = Cluster(workdir / "tls", workers=1, tls=tls)
    try:
        assert cluster.address.startswith("tls://")
        src = workdir / "a.pcapng"
        generate(src, packets=600, seed=5, fmt="pcapng")
        local = cli(src, "-o", workdir / "local", *OPS)
        assert local.returncode == 0, local.stderr
        env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
               "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(tls["ca"]),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(tls["cert"]),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(tls["key"])}
        remote = cli(src, "-o", workdir / "remote", *OPS, "--scheduler", cluster.address, env_extra=env)
        assert remote.returncode == 0, remote.stderr
        assert outputs(workdir / "remote") == outputs(workdir / "local")
        # without the client's certificate the scheduler cannot be used: one sentence, exit 2
        refused = cli(src, "-o", workdir / "other", *OPS, "--scheduler", cluster.address)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "pktmask-gui process: error: cannot reach the Dask scheduler" in refused.stderr, refused.stderr
        assert "tls:// needs Dask's TLS settings" in refused.stderr
    finally:
        cluster.stop()
