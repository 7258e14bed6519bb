"""The job workspace: private temp dirs, their owners, the stale sweep, hard links, cleanup, memory.

Every job runs inside a private ``pktmask_pipeline_`` dir in the temp root, whose name says which process
made it (pid, start time, host: ``pktmask_pipeline_<pid>-<start>-<host>_<random>``), so that the sweep at
the next start removes a dir only when its owners are gone — never a live instance's; ``sweep_owned_by``
removes at once the dirs of a worker that has ended. A marker file (``pktmask-owner.json``) is written only
when there is more to say than the name holds: more owners (the worker processes of a split file), or a
staging dir in the output folder (``pktmask_output_``, which carries the same marker and is named in the
pipeline dir's, so the sweep finds it too). Why names, not a marker per job: on ext4 each new inode costs
~0.2 ms, more as files come and go, and a small capture's whole job is ~3 ms.

For the same reason a process that runs job after job (a pool's worker, the CLI) may keep its last
pipeline dir, emptied, for its next job (``keep_spare_dir``): on ext4 without a journal every inode freed
in the last minute (six while its inode-table block is dirty) is skipped, a buffer lookup each, by every
later allocation in its group, so a dir made and removed per job left a batch's worth of freed inodes
that slowed every file made after it (perf: 11% of a run that came right after another, in
``find_inode_bit``/``recently_deleted``). The spare carries its owner in its name like any workspace and
is removed when the caller says no job follows, when the process exits normally, or by the sweeps.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

PIPELINE_PREFIX = "pktmask_pipeline_"
STAGE_PREFIX = "pktmask_stage_"
OUTPUT_PREFIX = "pktmask_output_"
MARKER = "pktmask-owner.json"


def _fmt_size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return str(nbytes)


_OWN_IDENTITY: dict[int, dict[str, Any]] = {}


def process_identity(pid: int) -> dict[str, Any]:
    """What a marker names a process by: its pid and start time (a recycled pid has another start time)."""
    if pid == os.getpid() and pid in _OWN_IDENTITY:
        return dict(_OWN_IDENTITY[pid])     # ours cannot change while we run: asked once per process
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0
    identity: dict[str, Any] = {"pid": pid, "created": created, "host": socket.gethostname()}
    if pid == os.getpid() and created:
        _OWN_IDENTITY[pid] = dict(identity)
    return identity


def _host_key(host: str) -> str:
    return hashlib.sha1(host.encode("utf-8", "replace")).hexdigest()[:8]


def owner_tag(identity: dict[str, Any]) -> str:
    """An identity as a workspace dir's name carries it: ``<pid>-<start time, centiseconds>-<host key>``."""
    return f"{identity['pid']}-{round(float(identity['created']) * 100)}-{_host_key(identity['host'])}"


def owner_from_name(name: str, prefix: str) -> dict[str, Any] | None:
    """The owner a dir's name gives (see owner_tag), or None (a name of another form: an older version's)."""
    tag = name[len(prefix):].partition("_")[0]
    parts = tag.split("-")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[2]) != 8:
        return None
    return {"pid": int(parts[0]), "created": int(parts[1]) / 100, "hostkey": parts[2]}


def _is_alive(identity: dict[str, Any]) -> bool:
    # An owner on another host (a cluster worker writing to a shared output folder) cannot be judged from
    # here: taken as alive, its host's own sweep removes what it left.
    here = socket.gethostname()
    if identity.get("host", here) != here or identity.get("hostkey", _host_key(here)) != _host_key(here):
        return True
    try:
        proc = psutil.Process(int(identity["pid"]))
        # A recycled pid belongs to another process: compare start times (psutil rounds them).
        return abs(proc.create_time() - float(identity.get("created", 0))) < 1.0 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _owners(path: Path, prefix: str) -> list[dict[str, Any]] | None:
    """Who may write in a workspace dir: its marker's owners, else the one its name gives; None: unknown."""
    marker = _read_marker(path)
    if marker is not None:
        return [o for o in marker.get("owners") or [] if isinstance(o, dict)]
    named = owner_from_name(path.name, prefix)
    return None if named is None else [named]


_spare_lock = threading.Lock()
# emptied workspaces kept for reuse: (pid, temp root, dir). Two: a pool worker publishes a job (and empties
# its dir) while the next job already runs in a dir of its own (workerpool._Publisher)
_spares: list[tuple[int, Path, Path]] = []
SPARES = 2
_keep_spare = 0            # the pid of the process that keeps spares (a forked child does not inherit it)


def keep_spare_dir(keep: bool) -> None:
    """Whether this process keeps its workspace dirs (emptied) for its next jobs: True while more jobs
    follow; False removes the spares now (and any later workspace is removed when it closes, as usual)."""
    global _keep_spare
    with _spare_lock:
        _keep_spare = os.getpid() if keep else 0
        if keep:
            return
        mine = [sp for sp in _spares if sp[0] == os.getpid()]
        _spares[:] = [sp for sp in _spares if sp[0] != os.getpid()]
    for _pid, _root, path in mine:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _take_spare(temp_root: Path) -> Path | None:
    pid = os.getpid()
    taken, stale = None, []
    with _spare_lock:
        for sp in [sp for sp in _spares if sp[0] == pid]:
            if sp[1] != temp_root or not sp[2].is_dir():
                stale.append(sp)                # another temp root now: not needed
            elif taken is None:
                taken = sp
        for sp in stale + ([taken] if taken is not None else []):
            _spares.remove(sp)
    for _pid, _root, path in stale:
        with contextlib.suppress(OSError):
            os.rmdir(path)
    return None if taken is None else taken[2]


def _offer_spare(temp_root: Path, path: Path) -> bool:
    pid = os.getpid()
    with _spare_lock:
        if _keep_spare != pid or sum(1 for sp in _spares if sp[0] == pid) >= SPARES:
            return False
        _spares.append((pid, temp_root, path))
        return True


class JobWorkspace:
    """The private temp dir of one job, as a context manager.

    The dir, its marker, the hard link of a large input, stage dirs and the output staging dir are all
    removed on exit, whatever happened inside (success, error, cancel).
    """

    def __init__(self, temp_root: Path | str | None = None, job: str = ""):
        self.temp_root = Path(temp_root) if temp_root else Path(tempfile.gettempdir())
        self.log = logging.LoggerAdapter(log, {"job": job})    # ``job``: the input's file name
        # cleanup steps, run newest first on exit; every one runs even when another fails (_logged)
        self.cleanups = contextlib.ExitStack()
        self.path: Path | None = None
        self._owners = [process_identity(os.getpid())]
        self._staging: list[str] = []
        self._marked = False        # a marker file exists (more owners, or a staging dir elsewhere)

    def __enter__(self) -> JobWorkspace:
        self.path = _take_spare(self.temp_root)
        if self.path is not None:
            return self
        prefix = f"{PIPELINE_PREFIX}{owner_tag(self._owners[0])}_"     # the owner, for the sweep
        try:
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.temp_root))  # 0700: this user's
        except OSError as exc:
            raise OSError(f"cannot create a temp folder in {self.temp_root}: {exc.strerror or exc}") from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.cleanups.close()
        path, self.path = self.path, None
        if path is None:
            return
        try:
            if self._marked:
                _empty_but_marker(path)
                os.unlink(path / MARKER)
            else:
                for child in os.scandir(path):     # usually nothing: the output has moved into place
                    _remove_entry(child)
            if self._marked or not _offer_spare(self.temp_root, path):
                os.rmdir(path)
        except OSError as exc:
            # A second try: an entry that vanished under the first one (FileNotFoundError) is no reason
            # to leave the rest behind; what still cannot go is reported.
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                self.log.warning("Could not remove the temp folder %s: %s", path, exc)

    def _write_marker(self) -> None:
        marker = {"owners": self._owners, "started": time.time(), "staging": self._staging}
        assert self.path is not None            # only inside the with block
        tmp = self.path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker), encoding="utf-8")
        os.replace(tmp, self.path / MARKER)     # a reader never meets half a marker
        self._marked = True

    def add_owner(self, pid: int) -> None:
        """Name another process that may write in this workspace."""
        self._owners.append(process_identity(pid))
        self._write_marker()

    def stage_dir(self) -> Path:
        """A fresh ``pktmask_stage_`` dir for stage scratch, removed with the workspace."""
        path = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=self.path))
        self.cleanups.callback(_logged, self.log, f"remove {path}", shutil.rmtree, path, ignore_errors=True)
        return path

    def output_staging(self, output_dir: Path) -> Path:
        """Where the output is written before it moves into place atomically (a hard link, never over a file).

        The workspace itself when it lies on the output folder's file system: the link then works from here
        and the job needs no dir in the output folder nor a marker (three inodes fewer: on many small
        captures a third of the job). Else a private ``pktmask_output_`` dir in the output folder, named in the marker.
        ``restage`` moves a staged file when the link meets a mount boundary all the same (a bind mount).
        """
        assert self.path is not None
        try:
            if os.stat(output_dir).st_dev == os.stat(self.path).st_dev:
                return self.path
        except OSError:
            pass
        return self._staging_dir(output_dir)

    def restage(self, staged: Path, output_dir: Path) -> Path:
        """``staged`` copied into a staging dir in ``output_dir`` (the link from the workspace crossed a mount
        boundary); the copy is synced, the first removed."""
        target = self._staging_dir(output_dir) / staged.name
        self.log.info("the output could not be linked into place from the temp folder (another mount): "
                      "copying it through a staging folder in the output folder.")
        with open(staged, "rb") as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.unlink(staged)
        return target

    def _staging_dir(self, output_dir: Path) -> Path:
        try:
            path = Path(tempfile.mkdtemp(prefix=f"{OUTPUT_PREFIX}{owner_tag(self._owners[0])}_", dir=output_dir))
        except OSError as exc:
            raise OSError(f"the output folder {output_dir} is not writable ({exc.strerror or exc})") from exc
        self.cleanups.callback(_logged, self.log, f"remove {path}", _remove_marker_last, path)
        self._staging.append(str(path))
        marker = {"owners": self._owners, "started": time.time(), "pipeline": str(self.path)}
        try:
            (path / MARKER).write_text(json.dumps(marker), encoding="utf-8")
        except OSError as exc:
            raise OSError(f"the output folder {output_dir} is not writable ({exc.strerror or exc})") from exc
        try:
            self._write_marker()
        except OSError as exc:
            raise OSError(f"cannot write in the temp folder {self.temp_root} ({exc.strerror or exc})") from exc
        return path

    def link_input(self, source: Path, threshold_bytes: int) -> Path:
        """The path the job reads its input through: a hard link at or above the threshold, else the source.

        The link gives the job a stable private name for every pass (pre-scan, main pass, self-check),
        whatever happens to the original's name, without copying. Any OSError falls back to the original.
        Nothing ever opens the link for writing.
        """
        size = source.stat().st_size
        if size < threshold_bytes:
            self.log.debug("%s is below the hard-link threshold (%s); reading it in place.",
                           _fmt_size(size), _fmt_size(threshold_bytes))
            return source
        stage = self.stage_dir()
        link = stage / f"input{source.suffix}"
        try:
            os.link(source, link)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.log.warning("large input (%s) could not be hard-linked into the temp folder %s (%s); "
                             "falling back to reading the original file directly.",
                             _fmt_size(size), self.temp_root, reason)
            return source
        self.cleanups.callback(_logged, self.log, f"remove {link}", link.unlink, missing_ok=True)
        self.log.info("large input (%s, threshold %s) hard-linked into the temp folder; "
                      "all passes read the private link, no copy made.", _fmt_size(size), _fmt_size(threshold_bytes))
        return link


def _logged(logger: logging.Logger | logging.LoggerAdapter[Any], description: str, step: Callable[..., object],
            *args: Any, **kwargs: Any) -> None:
    """One cleanup step; a failure is logged (to the job's ``logger``), never raised, so that the steps
    after it still run."""
    try:
        step(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failure must not stop the rest
        logger.warning("Cleanup step failed (%s): %s", description, exc)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _stale(path: Path, prefix: str, min_age_s: float) -> bool:
    owners = _owners(path, prefix)
    if owners is None:
        # No owner known (an older version's dir whose owner died before it wrote its marker): only remove
        # such a dir once it is clearly not being set up right now.
        try:
            return time.time() - path.stat().st_mtime > min_age_s
        except OSError:
            return False
    return not any(_is_alive(owner) for owner in owners)


def sweep_stale(temp_root: Path | str | None = None, extra_dirs: Iterable[Path | str] = (),
                min_age_s: float = 60.0) -> list[Path]:
    """Remove workspace dirs whose owning processes are all gone; log each; return what was removed.

    ``extra_dirs``: output folders to search for ``pktmask_output_`` staging dirs as well (the staging
    dirs named in stale pipeline markers are removed in any case).
    """
    root = Path(temp_root) if temp_root else Path(tempfile.gettempdir())
    removed: list[Path] = []
    candidates: list[tuple[Path, str]] = []
    try:
        candidates += [(p, PIPELINE_PREFIX) for p in root.iterdir()
                       if p.name.startswith(PIPELINE_PREFIX) and p.is_dir()]
    except OSError:
        pass
    for folder in extra_dirs:
        try:
            candidates += [(p, OUTPUT_PREFIX) for p in Path(folder).iterdir()
                           if p.name.startswith(OUTPUT_PREFIX) and p.is_dir()]
        except OSError:
            pass
    for path, prefix in candidates:
        if not _stale(path, prefix, min_age_s):
            continue
        marker = _read_marker(path) or {}
        for staging in marker.get("staging") or []:
            staging_path = Path(staging)
            if staging_path.name.startswith(OUTPUT_PREFIX) and staging_path.is_dir():
                shutil.rmtree(staging_path, ignore_errors=True)
                removed.append(staging_path)
                log.info("Removed a partial output left by an earlier run that ended abnormally: %s",
                         staging_path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log.info("Removed a temp folder left by an earlier run that ended abnormally: %s", path)
    return removed


def _remove_entry(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


def _empty_but_marker(path: Path) -> None:
    """Remove what a workspace dir holds, its marker excepted. The marker goes last: a process killed while
    it removes the dir (a pool's worker that did not answer a cancel in time) leaves a dir that its marker
    still names, which sweep_owned_by (or the next start's sweep) then removes."""
    for child in os.scandir(path):
        if child.name != MARKER:
            _remove_entry(child)


def _remove_marker_last(path: Path) -> None:
    """shutil.rmtree(path, ignore_errors=True), the marker last."""
    with contextlib.suppress(OSError):
        _empty_but_marker(path)
    shutil.rmtree(path, ignore_errors=True)


def sweep_owned_by(identity: dict[str, Any], temp_root: Path | str | None,
                   output_dirs: Iterable[Path | str] = ()) -> list[Path]:
    """Remove at once the workspace dirs of one process that has ended (a pool's worker, killed or dead):
    the pipeline dirs in ``temp_root`` and the staging dirs in ``output_dirs`` whose name or marker names it
    and no live process."""
    def owned(path: Path, prefix: str) -> bool:
        owners = _owners(path, prefix)
        if not owners:
            return False
        named = any(o.get("pid") == identity["pid"] and abs(float(o.get("created", 0)) - identity["created"]) < 1.0
                    for o in owners)
        return named and not any(_is_alive(o) for o in owners)

    removed: list[Path] = []
    root = Path(temp_root) if temp_root else Path(tempfile.gettempdir())
    candidates = [(root, PIPELINE_PREFIX)] + [(Path(d), OUTPUT_PREFIX) for d in output_dirs]
    for folder, prefix in candidates:
        try:
            paths = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.is_dir()]
        except OSError:
            continue
        for path in paths:
            if not owned(path, prefix):
                continue
            for staging in (_read_marker(path) or {}).get("staging") or []:
                if Path(staging).name.startswith(OUTPUT_PREFIX) and Path(staging).is_dir():
                    shutil.rmtree(staging, ignore_errors=True)
                    removed.append(Path(staging))
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in removed:
        log.debug("Removed %s, left by a worker process that ended.", path)
    return removed


class MemoryMonitor:
    """Samples process RSS and system available memory (psutil) at most ``interval`` seconds apart.

    ``pressure()`` returns a reason string when a threshold is crossed, else None. Cheap to call per batch.
    """

    def __init__(self, rss_mb: int = 1024, available_pct: int = 10, interval: float = 0.25,
                 pids: Callable[[], list[int]] | None = None):  # noqa: ARG002 (accepted, unused: own RSS only)
        self.rss_limit = rss_mb * 1024 * 1024 if rss_mb else 0
        self.available_pct = available_pct
        self.interval = interval
        self._next = 0.0
        self.events = 0

    def pressure(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval
        rss, pct = _memory_readings(now, self.interval)
        if self.rss_limit and rss > self.rss_limit:
            self.events += 1
            return f"the job uses {_fmt_size(rss)} of memory, above the {_fmt_size(self.rss_limit)} limit"
        if self.available_pct and pct < self.available_pct:
            self.events += 1
            return f"only {pct:.0f}% of system memory is available (limit {self.available_pct}%)"
        return None


_READINGS: dict[str, Any] = {"pid": None, "at": -1e9, "rss": 0, "pct": 100.0, "proc": None}


def _memory_readings(now: float, interval: float) -> tuple[int, float]:
    """(this process's RSS, % of system memory available), read at most ``interval`` apart and shared by the
    jobs of a process: a job of a small capture is over in milliseconds, and three /proc reads each were a
    twentieth of it."""
    readings = _READINGS
    if readings["pid"] != os.getpid():                  # first use, or a forked worker: its own process
        readings.update(pid=os.getpid(), proc=psutil.Process(), at=-1e9)
    if now - readings["at"] >= interval:
        vm = psutil.virtual_memory()
        readings.update(at=now, rss=readings["proc"].memory_info().rss, pct=100.0 * vm.available / vm.total)
    return readings["rss"], readings["pct"]
