"""A real Dask scheduler and two real workers for the cluster tests, started by their own commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import distributed
import psutil

REPO = Path(__file__).resolve().parents[1]


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
