"""`process --scheduler`: batches on a real Dask scheduler with two real worker processes (never a mock).

The scheduler and the workers are started by their own commands (``python -m distributed.cli.dask_scheduler``
/ ``dask_worker``, as ``dask scheduler`` / ``dask worker`` do), each worker with a temp folder of its own
(TMPDIR) so that leftovers can be looked for where the workers write. Skipped where ``distributed`` (the
optional extra ``cluster``) is not installed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the optional extra 'cluster' (distributed) is not installed")

import psutil  # noqa: E402

from conftest import leftovers  # noqa: E402
from pktmask_gui.samplegen import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPS = ("--dedup", "--anonymize", "--mask")


class Cluster:
    """A scheduler and two nanny-managed workers, started as subprocesses; stopped by their own pids."""

    def __init__(self, root: Path):
        self.root = root
        self.worker_tmp = root / "worker-tmp"
        self.worker_tmp.mkdir()
        self.worker_config = root / "worker-config"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   TMPDIR=str(self.worker_tmp), PKTMASK_CONFIG_DIR=str(self.worker_config))
        env.pop("XDG_CONFIG_HOME", None)
        self.logs = []
        sched_file = root / "scheduler.json"
        self.procs = [self._start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                                   "--no-dashboard", "--host", "127.0.0.1", "--scheduler-file", str(sched_file)],
                                  env, "scheduler")]
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        self.nannies = [self._start([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                                     "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                     "--name", f"w{n}"], env, f"worker{n}") for n in (1, 2)]
        self.procs += self.nannies
        self.wait_for_workers(2)

    def _start(self, cmd, env, name):
        log = open(self.root / f"{name}.log", "wb")
        self.logs.append(self.root / f"{name}.log")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        return proc

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        with distributed.Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> set[int]:
        """The worker processes (the nannies' children that run tasks)."""
        pids = set()
        for nanny in self.nannies:
            for child in psutil.Process(nanny.pid).children():
                if "spawn_main" in " ".join(child.cmdline()):
                    pids.add(child.pid)
        return pids

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_text(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.logs if p.exists())


@pytest.fixture(scope="module")
def cluster():
    with tempfile.TemporaryDirectory(prefix="pktmask_test_cluster_") as name:
        c = Cluster(Path(name))
        try:
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="module")
def big_inputs():
    """Four captures whose tasks take about a second each on a worker (time to kill one or cancel)."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_cluster_in_") as name:
        folder = Path(name)
        for i in range(4):
            generate(folder / f"big{i}.pcap", packets=20000, seed=100 + i)
        yield folder


def cli(*args, wait=True, **kwargs):
    cmd = [sys.executable, "-m", "pktmask_gui", "process", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180, **kwargs)


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_owner(out: Path, timeout: float = 60) -> int | None:
    """The pid of the process writing the first staging dir that appears in ``out`` (a task mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for marker in out.glob("pktmask_output_*/pktmask-owner.json"):
            try:
                return int(json.loads(marker.read_text())["owners"][-1]["pid"])
            except (OSError, ValueError, KeyError, IndexError):
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
    local = cli(src, "-o", workdir / "local", *OPS, "--jobs", "1", "--json")
    assert local.returncode == 0, local.stderr
    remote = cli(src, "-o", workdir / "remote", *OPS, "--scheduler", cluster.address, "--json")
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
        victim = staging_owner(workdir / "remote")
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
        assert staging_owner(workdir / "out") is not None
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
    (line,) = [l for l in proc.stderr.splitlines() if "pktmask-gui" in l]
    assert "Dask worker" in line and f"cannot see the input {hidden}/x.pcap" in line
    assert "every worker reaches at the same path" in line
    assert list((workdir / "out").iterdir()) == []
    assert leftovers(workdir, cluster.worker_tmp) == []


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
