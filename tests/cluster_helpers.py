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

    def __init__(self, root: Path, workers: int = 2, tls: dict | None = None):
        self.root = root
        self.worker_tmp = root / "worker-tmp"
        self.worker_tmp.mkdir()
        self.worker_config = root / "worker-config"
        # (the tests' folder too: a test may send a function of this module as a task)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                           os.environ.get("PYTHONPATH", "")]),
                   TMPDIR=str(self.worker_tmp), PKTMASK_CONFIG_DIR=str(self.worker_config))
        env.pop("XDG_CONFIG_HOME", None)
        self.logs = []
        sched_file = root / "scheduler.json"
        tls_args = [] if tls is None else ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
                                           "--tls-key", str(tls["key"])]
        self.security = None
        if tls is not None:
            self.security = distributed.security.Security(tls_ca_file=str(tls["ca"]), tls_client_cert=str(tls["cert"]),
                                                          tls_client_key=str(tls["key"]), require_encryption=True)
        self.procs = [self._start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                                   "--no-dashboard", "--host", "127.0.0.1", "--scheduler-file", str(sched_file),
                                   *(["--protocol", "tls"] if tls else []), *tls_args], env, "scheduler")]
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        self.nannies = [self._start([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                                     "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                     "--name", f"w{n}", *tls_args], env, f"worker{n}")
                        for n in range(1, workers + 1)]
        self.procs += self.nannies
        self.wait_for_workers(workers)

    def _start(self, cmd, env, name):
        self.logs.append(self.root / f"{name}.log")
        with open(self.logs[-1], "wb") as log:      # the process keeps its own copy of the descriptor
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        with distributed.Client(self.address, timeout=30, set_as_default=False, security=self.security) as client:
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
        children = []
        for proc in self.procs:
            try:
                children += psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # the workers (and their resource trackers) end with their nanny; never leave one behind
        _gone, alive = psutil.wait_procs(children, timeout=3)
        for child in alive:
            child.kill()
        psutil.wait_procs(alive, timeout=5)

    def log_text(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.logs if p.exists())


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A certificate authority and one certificate (for 127.0.0.1) signed by it, as PEM files: enough for a
    scheduler, a worker and a client to speak tls:// to each other."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pktmask test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def page_faults_of_jobs(capture: str, out: str) -> dict:
    """Runs on a Dask worker: the minor page faults of one job, plain and inside ``streaming_allocator``."""
    import contextlib
    import resource

    from pktmask_gui.cluster import streaming_allocator
    from pktmask_gui.pipeline import Job, run_job
    from pktmask_gui.settings import Settings

    def faults(name, around):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        with around():
            result = run_job(Job(input=Path(capture), output_dir=Path(out) / name, key=bytes(range(32)),
                                 stages=["dedup", "anonymize", "mask"]), Settings())
        assert result.status == "ok", result.error
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    faults("warm-up", contextlib.nullcontext)       # (the first job's imports fault pages in too)
    return {"setting": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "plain": faults("plain", contextlib.nullcontext),
            "streaming": faults("streaming", streaming_allocator)}
