"""The first pass on two cores: a follower pre-scans the second half of the file while the leader pre-scans
the first; the leader then makes the follower's results its own, exactly, or reads the second half itself.

The first pass (Remove Dupes' decisions, Mask Payloads' pre-scan) carries state from frame to frame, so
the follower's half starts from a guess, an empty state, and the leader corrects what that guess got
wrong (docs/ARCHITECTURE.md, "The first pass on two cores", says why each step is exact):

- **Remove Dupes.** The follower hashes every frame of its half (the costly part) and decides against its
  half alone; the leader looks the follower's fingerprints up in its own table (forks share the
  interpreter's hash key): a frame is a duplicate when the follower said so or the first half holds it.
  The frames only the leader drops ("extra") were pre-scanned by the follower: their directions are
  walked again, and the frame numbers after them move down.
- **Mask Payloads.** A direction the follower first meets at a SYN starts fresh in both runs, so its
  walk is the one-core walk. Any other direction ("suspect": data, FIN or RST with no SYN, which is how a
  direction open across the boundary looks) is walked again by the leader from its own state at the
  boundary, from records the follower writes for it to a file beside the staged output (the download
  open across the boundary may be most of the half); its counts in the follower are set apart and
  dropped. Fragmented datagrams are walked again when the leader has some open at the boundary.
- **What couples directions** is checked, and the leader reads the second half itself when it fails:
  LIVE_LIMIT (the open directions of both halves and the suspects stay below it, so nothing is closed
  for room), a direction open at the boundary met again at a SYN with its own sequence number, an extra
  duplicate in a direction that is not walked again, more fragment records than ``RECORDS_MAX`` or
  directions than ``DIRECTIONS_MAX`` (both bound the follower's memory). The closed-keys bitmap couples
  directions only through a suspect's mid-stream start: the follower notes the frame and bit of each
  plain direction's close, and the leader replays those closes in frame order among the suspects'
  records (and ends a direction open at the boundary at the frame of its new SYN), so each start reads
  the bitmap one core reads.

The boundary is found by a guess too (``boundary``: record lengths that chain); the leader's reader must
end a record exactly there before anything depends on it. Anything the follower could not do (damage,
``--strict`` meeting an unreadable frame, a table in window mode) makes the leader read on: its errors
and warnings are then the one-core pass's own.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import mmap
import os
import struct
import time
from array import array
from bisect import bisect_left
from multiprocessing.connection import wait as wait_any
from zlib import crc32

from .capture import EPB, IDB, MAX_BLOCK, MAX_CAPLEN, SPB, CaptureReader, _BOM, _PCAP_MAGICS, _SHB_MAGIC
from .pipeline import BATCH, Cancelled, ExecSpec, _run_order, describe_failure
from .stages import StageContext, stage_by_name
from .stages.mask_prescan import CLOSED_BITS, LIVE_LIMIT, P_BASE
from .tcpstream import MASK32

log = logging.getLogger(__name__)

# what a follower keeps, bounded (its peak stays near one core's; past either bound the leader reads on):
RECORDS_MAX = 16 << 20          # bytes of fragment records for the leader to walk again (sent: twice that)
SPILL_SUFFIX = ".firstpass"      # the suspects' records, beside the staged output (at most the half's size)
DIRECTIONS_MAX = 1 << 16        # directions noted by their first touch (~300 bytes each, sets included)
SEARCH = 4 << 20                # bytes after the middle searched for a record boundary
# a boundary guess holds when the lengths chain for at least CHAIN records and SPAN bytes (or to the end):
# longer than any record, so a chain inside one record's data (a capture carried in a payload) would have
# to run on through the real records' headers
CHAIN = 64
SPAN = MAX_CAPLEN + 4096
# the leader's share of the file (and the main pass's split point): measured, bench.py --split on the 1M-packet
# mix: 0.48 left the follower's segment ~2 s behind, 0.54 the leader's ~1.5 s (it also makes the follower's
# pre-scan its own, ~0.2 s, and appends its output, ~0.2-0.4 s)
LEADER_SHARE = 0.52
_KNOWN_BLOCKS = frozenset((IDB, 2, SPB, 4, 5, EPB, 10, 0xBAD, 0x40000BAD))
_SEQ = struct.Struct("!I").unpack_from


def eligible(spec: ExecSpec) -> bool:
    """Whether this job's first pass can run on two cores: Mask Payloads is its only pre-scan, and the stages
    before it only drop frames (Remove Dupes, with the interpreter's hash: the same key in a fork)."""
    names = _run_order(spec.stages)
    classes = [stage_by_name(n) for n in names]
    pre = [j for j, cls in enumerate(classes) if cls.needs_prescan]
    if len(pre) != 1 or classes[pre[0]].name != "mask":
        return False
    before = [cls for cls in classes[:pre[0]] if not cls.prescan_transparent]
    if not all(cls.drops_frames for cls in before):
        return False
    return not before or os.environ.get("PYTHONHASHSEED", "random") in ("", "random")


def boundary(path: str) -> tuple[int, bytes] | None:
    """A record (pcapng: block) boundary at or after LEADER_SHARE of the file, and what the second half is read
    after (pcap: the file header; pcapng: the first section's SHB and the IDBs right after it); None when
    none is found. A guess: ``CHAIN`` records whose lengths lead from one to the next."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 64:
                return None
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                magic = mm[:4]
                if magic in _PCAP_MAGICS:
                    return _pcap_boundary(mm, size)
                if magic == _SHB_MAGIC:
                    return _pcapng_boundary(mm, size)
    except (OSError, ValueError):
        return None                     # (a file system without mmap, a file that shrank: one core reads it)
    return None


def _pcap_boundary(mm, size: int):
    e, unit, hl = _PCAP_MAGICS[mm[:4]]
    rec = struct.Struct(e + "IIII").unpack_from
    if size < 24 + hl:
        return None
    first = rec(mm, 24)[0]              # timestamps stay within a year before and ten after the first one
    lo, hi = first - 366 * 86400, first + 3660 * 86400
    start = int(size * LEADER_SHARE)
    for q in range(start, min(size - hl, start + SEARCH)):
        p, n = q, 0
        while p < size and (n < CHAIN or p - q < SPAN):
            if p + hl > size:
                break
            sec, frac, caplen, origlen = rec(mm, p)
            if not 0 < caplen <= MAX_CAPLEN or caplen > origlen or origlen > 1 << 20 or frac >= unit \
                    or not lo <= sec <= hi:
                break
            p += hl + caplen
            n += 1
        if p == size or p <= size and n >= CHAIN and p - q >= SPAN:
            return q, bytes(mm[:24])
    return None


def _pcapng_boundary(mm, size: int):
    e = _BOM.get(bytes(mm[8:12]))
    if e is None:
        return None
    head2 = struct.Struct(e + "II").unpack_from
    u32 = struct.Struct(e + "I").unpack_from
    shb_len = head2(mm, 0)[1]
    if shb_len < 28 or shb_len & 3 or shb_len > size or struct.unpack_from(e + "q", mm, 16)[0] != -1:
        return None                     # (a section that gives its length is never split anyway)
    pos = shb_len
    while pos + 12 <= size:             # the IDBs right after the section header
        btype, blen = head2(mm, pos)
        if btype != IDB or blen < 20 or blen & 3 or pos + blen > size:
            break
        pos += blen
    head = bytes(mm[:pos])
    start = max(pos, (int(size * LEADER_SHARE) + 3) & ~3)
    for q in range(start, min(size - 12, start + SEARCH), 4):
        btype, blen = head2(mm, q)
        if btype not in (EPB, SPB):
            continue
        p, n = q, 0
        while p < size and (n < CHAIN or p - q < SPAN):
            if p + 12 > size:
                break
            btype, blen = head2(mm, p)
            if btype not in _KNOWN_BLOCKS or blen < 12 or blen & 3 or blen > MAX_BLOCK or p + blen > size \
                    or u32(mm, p + blen - 4)[0] != blen:
                break
            p += blen
            n += 1
        if p == size or n >= CHAIN and p - q >= SPAN:
            return q, head
    return None


# --------------------------------------------------------------------------------------------------
# The follower
# --------------------------------------------------------------------------------------------------

class _TooMany(Exception):
    """More directions than the follower notes (DIRECTIONS_MAX): the leader reads on."""


def _speculative(cls):
    """Mask Payloads' stage class, noting what the leader needs to check and walk again (see the module's
    docstring): each direction's first touch, the suspects' records and counts, the fragments."""

    class Speculative(cls):
        def __init__(self, options, context):
            super().__init__(options, context)
            self.touch = self._touched
            self.first: dict = {}           # direction key -> suspect (True) or met first at a SYN (False)
            self.syn_base: dict = {}        # a direction met first at a SYN: its sequence base
            self.syn_frame: dict = {}       # ...and that SYN's frame
            self.plain_closes = array("Q")  # frame << 24 | closed-keys bit of each plain direction's close
            self.at = 0                     # the frame being pre-scanned
            self.touched = bytearray()      # frame -> 1: a plain direction's, 2: a suspect's
            # the suspects' records go to a file (a long download open across the boundary can be most
            # of the half); their frames, link types and lengths stay here
            self.spill_path = ""
            self.spill = None
            self.rec_frames, self.rec_lts = array("Q"), array("i")
            self.rec_lens, self.rec_wire = array("I"), array("Q")     # captured and on-the-wire lengths
            self.frag_records: list = []    # (frame, record) of the fragments
            self.kept_bytes = 0
            self.overflow = False
            self.set_apart: dict = {}       # the suspects' record counts (the leader walks them again)
            self.max_live = 0

        def _keep_fragment(self, i: int, rec) -> None:
            if self.overflow:
                return
            self.frag_records.append((i, rec))
            self.kept_bytes += len(rec[0]) + 100
            if self.kept_bytes > RECORDS_MAX:
                self.overflow = True
                self.frag_records = []

        def _spill(self, i: int, rec) -> None:
            if self.spill is None:
                self.spill = open(self.spill_path, "wb", buffering=1 << 20)  # noqa: SIM115 - _speculate closes it
            self.spill.write(rec[0])
            self.rec_frames.append(i)
            self.rec_lts.append(rec[1])
            self.rec_lens.append(len(rec[0]))
            self.rec_wire.append(rec[3])   # (the pre-scan tells a frame cut by the snap length by it)

        def _touched(self, i: int, key, rec, t: int, flags: int) -> None:
            if key is None:
                self._keep_fragment(i, rec)
                return
            self.at = i
            suspect = self.first.get(key)
            if suspect is None:
                if len(self.first) >= DIRECTIONS_MAX:
                    raise _TooMany()
                suspect = self.first[key] = not flags & 2
                if not suspect:
                    self.syn_base[key] = (_SEQ(rec[0], t + 4)[0] + 1) & MASK32
                    self.syn_frame[key] = i
            touched = self.touched
            if i >= len(touched):
                touched.extend(bytes(i - len(touched) + (1 << 16)))
            if suspect:
                touched[i] = 2
                self._spill(i, rec)
            else:
                touched[i] = 1

        def _open(self, key, base: int, i: int, midstream: bool) -> list:
            suspect = self.first.get(key)
            st = super()._open(key, base, i, midstream)
            if suspect:
                st.append(True)             # a suspect's: its counts are set apart
            if len(self.live) > self.max_live:
                self.max_live = len(self.live)
            return st

        def _close(self, key, st) -> None:
            if self.first.get(key) is False:   # (the leader replays them in frame order: see land)
                self.plain_closes.append(self.at << 24 | crc32(key) & (CLOSED_BITS - 1))
            super()._close(key, st)

        def _start(self, st):
            if len(st) <= 8:
                return super()._start(st)
            saved, self.record_counts = self.record_counts, self.set_apart
            try:
                return super()._start(st)
            finally:
                self.record_counts = saved

        def _finish(self, st) -> None:
            gaps, resyncs = self.gaps, self.resyncs
            super()._finish(st)
            if len(st) > 8:                 # a suspect's gaps and resyncs: not counted
                self.gaps, self.resyncs = gaps, resyncs

    return Speculative


def speculate(spec: ExecSpec, conn, control) -> None:
    """The follower's first pass over the second half; its result goes to the leader through ``conn``. A
    failure is a result too ("failed"): the leader then reads that half itself. Cancelled propagates."""
    t0, c0 = time.monotonic(), time.process_time()
    try:
        result = _speculate(spec, control)
    except Cancelled:
        raise
    except _TooMany:
        result = {"failed": f"more than {DIRECTIONS_MAX:,} directions in the second half"}
    except Exception as exc:  # noqa: BLE001 - the leader reads the half itself and meets it as one core would
        result = {"failed": describe_failure(exc)[1]}
    result["seconds"] = (time.monotonic() - t0, time.process_time() - c0)
    sent = "failed" not in result
    try:
        conn.send(result)
    except OSError:
        sent = False                    # the leader read the half itself and stopped listening
    conn.close()
    if not sent:                        # (the leader may have removed it before it was made)
        discard_spill(spec)


def _not_needed(control) -> bool:
    """Whether the leader has planned without this pre-scan: its plan ("go") came, kept for control.expect().
    A stop (or the parent gone) raises Cancelled."""
    if control.pending is None and control.conn.poll():
        try:
            message = control.conn.recv()
        except (EOFError, OSError):
            message = ("stop",)
        if message[0] != "go":
            control.stopped = True
            raise Cancelled()
        control.pending = message
    return control.pending is not None


def _speculate(spec: ExecSpec, control) -> dict:
    found = boundary(spec.read_path)
    if found is None:
        return {"failed": "no record boundary found"}
    start, head = found
    size = os.path.getsize(spec.read_path)
    context = StageContext(log=logging.LoggerAdapter(log, {"job": spec.display_name}), key=spec.key,
                           config_dir=spec.config_dir, extra={"input_size": size})
    names = _run_order(spec.stages)
    at = next(j for j, n in enumerate(names) if stage_by_name(n).needs_prescan)
    deciders = [stage_by_name(n)(spec.stage_options.get(n, {}), context) for n in names[:at]
                if not stage_by_name(n).prescan_transparent]
    fps: list = []
    for d in deciders:                  # keep every fingerprint for the leader, in frame order
        compute = d._fingerprints

        def kept(datas, mix, compute=compute):
            f, c = compute(datas, mix)
            fps.append((f, c))
            return f, c
        d._fingerprints = kept
    mask = _speculative(stage_by_name(names[at]))(spec.stage_options.get(names[at], {}), context)
    mask.spill_path = spill_path(spec)
    from .segments import _SliceFile
    try:
        with CaptureReader(spec.read_path, fileobj=_SliceFile(spec.read_path, head, start, None)) as reader:
            for batch in reader.batches(BATCH):
                if _not_needed(control):
                    return {"failed": "the leader read the second half itself"}
                for d in deciders:
                    batch = d.process(batch)
                mask.prescan(batch)
            raw = reader.packets
            counts, cuts = dict(reader._counts), list(reader._cuts)
    finally:
        if mask.spill is not None:
            mask.spill.close()
    for key, st in list(mask.live.items()):     # the end of the file: what is open closes, as _end_prescan does
        mask._close(key, st)
    for dg in mask.datagrams.values():
        mask._settle(dg)
    import numpy as np
    d = deciders[0] if deciders else None
    f = np.concatenate([x[0] for x in fps]) if fps else np.zeros(0, np.int64)
    c = np.concatenate([x[1] for x in fps]) if fps else np.zeros(0, np.uint32)
    return {
        "start": start, "head": head, "raw": raw, "frames": mask.frame,
        "dedup": None if d is None else {"drops": bytes(d.dropped[:(d.frames + 7) >> 3]), "frames": d.frames,
                                         "window": d._window, "f": f.tobytes(), "c": c.tobytes()},
        "tls": mask.tls, "settled": mask.settled.tobytes(), "gaps": mask.gaps, "resyncs": mask.resyncs,
        "record_counts": mask.record_counts,
        "suspects": {k for k, s in mask.first.items() if s}, "syn_base": mask.syn_base,
        "syn_frame": mask.syn_frame, "plain_closes": mask.plain_closes.tobytes(), "touched": bytes(mask.touched),
        "spilled": tuple(a.tobytes() for a in (mask.rec_frames, mask.rec_lts, mask.rec_lens, mask.rec_wire)),
        "frag_records": mask.frag_records, "overflow": mask.overflow,
        "max_live": mask.max_live, "reader": (counts, cuts),
    }


# --------------------------------------------------------------------------------------------------
# The leader
# --------------------------------------------------------------------------------------------------

def receive(conn, control):
    """The follower's result; None if it is gone. A message on the control pipe while waiting: cancelled."""
    while True:
        ready = wait_any([conn, control.conn], None)
        if control.conn in ready:
            control.stopped = True
            raise Cancelled()
        try:
            return conn.recv()
        except (EOFError, OSError):
            return None


def spill_path(spec: ExecSpec) -> str:
    """Where the follower writes the suspects' records: beside the staged output, as the segments' parts
    (the job's own dir: removed with it, whatever happens)."""
    return spec.staged_path + SPILL_SUFFIX


def discard_spill(spec: ExecSpec) -> None:
    """The suspects' records are walked again (or not needed): their file goes now, not with the job's dir."""
    try:
        os.unlink(spill_path(spec))
    except OSError:
        pass


def _spill_index(res: dict) -> tuple:
    frames, lts, lens, wire = array("Q"), array("i"), array("I"), array("Q")
    for a, data in zip((frames, lts, lens, wire), res["spilled"]):
        a.frombytes(data)
    return frames, lts, lens, wire


def _spilled(index: tuple, path: str):
    """The suspects' records, (frame, record) in frame order, read back from the follower's file."""
    frames, lts, lens, wire = index
    if not frames:
        return
    with open(path, "rb", buffering=1 << 20) as fh:
        for i, lt, n, w in zip(frames, lts, lens, wire):
            data = fh.read(n)
            if len(data) != n:
                raise RuntimeError("internal error: the first pass's records file is short")
            yield i, (data, lt, 0, w, 0, None)


def land(res: dict, chain: list, reader, prefix: bytes, job_log, spill: str) -> str | None:
    """Make the follower's first pass over [start, end) the leader's own (``chain``: the frame-dropping stages,
    then Mask Payloads, as the reader stopped at ``start``). Returns None once it is done, else why not (and
    nothing has changed: the leader reads on)."""
    t0 = time.monotonic()
    if res is None:
        return "the follower is gone"
    if "failed" in res:
        return res["failed"]
    if res["overflow"]:
        return "too many fragment records to walk again"
    if reader._cuts:
        return "no record ends at the boundary"
    if res["head"] != prefix:
        return "the header blocks differ at the boundary"
    import numpy as np
    deciders, mask = chain[:-1], chain[-1]
    # Remove Dupes: the one-core decisions, without changing anything yet
    extra_raw = np.zeros(0, np.int64)
    local = None
    if deciders:
        d, mine = deciders[0], res["dedup"]
        if d._window or mine["window"] or d._resize_at is not None or d._table is None:
            return "Remove Dupes' table is in window mode"
        f = np.frombuffer(mine["f"], np.int64)
        c = np.frombuffer(mine["c"], np.uint32)
        if len(f) != mine["frames"] or mine["frames"] != res["raw"]:
            return "the follower's fingerprints do not cover its frames"
        local = np.unpackbits(np.frombuffer(mine["drops"], np.uint8), bitorder="little")[:len(f)].astype(bool)
        known = d._table.holds(f, c)
        extra_raw = np.flatnonzero(known & ~local)
    # a frame's number in the follower's pre-scan: frames it kept up to it
    if local is not None and len(extra_raw):
        kept_upto = np.cumsum(~local)
        extra = (kept_upto[extra_raw]).tolist()         # 1-based, as the pre-scan counts
    else:
        extra = []
    extra_set = set(extra)
    touched = res["touched"]
    frag_frames = {i for i, _ in res["frag_records"]}
    frag_again = bool(res["frag_records"]) and bool(mask.datagrams)
    for i in extra:
        if i in frag_frames:
            frag_again = True
        elif i < len(touched) and touched[i] == 1:
            return "a duplicate of the first half in a direction that is not walked again"
    # Mask Payloads: what couples directions
    live, suspects = mask.live, res["suspects"]
    if len(live) + res["max_live"] + len(suspects) >= LIVE_LIMIT:
        return "too many open directions"
    closes = array("Q")
    closes.frombytes(res["plain_closes"])
    ends: dict = {}
    for key, st in live.items():
        base = res["syn_base"].get(key)
        if base is None:
            continue
        if base == st[P_BASE]:
            return "a direction open at the boundary goes on at a SYN"
        closes.append(res["syn_frame"][key] << 24 | -1 & 0xFFFFFF)      # (a SYN ends it: see below)
        ends[res["syn_frame"][key]] = key

    index = _spill_index(res)
    try:
        whole = os.path.getsize(spill) if index[0] else 0
    except OSError:
        whole = -1
    if whole != sum(index[2]):
        return "the suspects' records file is not whole"

    # from here on nothing declines: the follower's work becomes the leader's
    if deciders:
        drops = deciders[0].decide_fingerprints(f, c)
        if len(drops) != int(local.sum()) + len(extra_raw):
            raise RuntimeError("internal error: Remove Dupes' decisions on the second half differ")
    base = mask.frame

    def number(i: int) -> int:
        return base + i - bisect_left(extra, i)

    again = (r for r in _spilled(index, spill) if r[0] not in extra_set)
    if frag_again:
        again = heapq.merge(again, (r for r in res["frag_records"] if r[0] not in extra_set), key=lambda r: r[0])
    # The suspects are walked again from the leader's state, and the closes of the second half's other
    # directions are replayed in frame order among them: a suspect's mid-stream start then reads the
    # closed-keys bitmap as one core does (the closes fall on the same frames in both runs).
    closes = sorted(closes)
    if mask.closed is None and closes:
        mask.closed = bytearray(CLOSED_BITS >> 3)
    bitmap, j = mask.closed, 0
    walked = 0
    for i, rec in itertools.chain(again, [(1 << 40, None)]):
        while j < len(closes) and closes[j] >> 24 < i:
            at, h = closes[j] >> 24, closes[j] & 0xFFFFFF
            j += 1
            if h == 0xFFFFFF:           # a direction open at the boundary, met again at a SYN: it ends there
                key = ends[at]
                if key in live:
                    mask._close(key, live[key])
            else:
                bitmap[h >> 3] |= 1 << (h & 7)
        if rec is not None:
            mask.frame = number(i) - 1
            mask.prescan([rec])
            walked += 1
    tls = mask.tls
    for key, v in res["tls"].items():
        if key in suspects:
            continue
        mine = tuple(_renumbered(e, number) for e in (v if type(v) is tuple else (v,)))
        old = tls.get(key)
        if old is not None:
            mine = (old if type(old) is tuple else (old,)) + mine
        tls[key] = mine if len(mine) > 1 else mine[0]
    if not frag_again:
        settled = array("Q")
        settled.frombytes(res["settled"])
        mask.settled.extend(number(v >> 24) << 24 | v & 0xFFFFFF for v in settled)
    mask.gaps += res["gaps"]
    mask.resyncs += res["resyncs"]
    for t, n in res["record_counts"].items():
        mask.record_counts[t] = mask.record_counts.get(t, 0) + n
    mask.frame = base + res["frames"] - len(extra)
    # the reader's warnings: the follower's, at the file's offsets and packet numbers
    counts, cuts = res["reader"]
    for k, n in counts.items():
        reader._counts[k] += n
    shift = res["start"] - len(res["head"])
    reader._cuts += [(what, offset + shift, kept + reader.packets) for what, offset, kept in cuts]
    job_log.debug("First pass: the second half pre-scanned by the follower in %.2f s (CPU %.2f s), made the "
                  "leader's in %.2f s: %d frames walked again, %d duplicates of the first half.", *res["seconds"],
                  time.monotonic() - t0, walked, len(extra_raw))
    return None


def _renumbered(e: bytes, number) -> bytes:
    """A packed entry (mask_prescan.pack_entry) with its first and last frame numbers moved by ``number``."""
    a = array(chr(e[-1]))
    a.frombytes(e[:-1])
    first, last = number(a[0]), number(a[1])
    if last > MASK32 and a.typecode == "I":
        a = array("q", a)
    a[0], a[1] = first, last
    return a.tobytes() + a.typecode.encode()
