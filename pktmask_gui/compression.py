"""Compressed captures: gzip, zstd and lz4 (frame format), read and written as streams.

Libraries, not hand-written codecs (they parse untrusted data, and the C implementations are the fast
ones): gzip through the standard library's ``zlib``; zstd through ``compression.zstd``, the standard
library's own module from Python 3.14, or on older Pythons its backport ``backports.zstd`` (the same code
and API; a runtime dependency until 3.14 is the oldest Python supported); lz4 through ``lz4.frame``. All
three have wheels for Windows, macOS and Linux. This module only drives them: members and frames one after
another, the position in the compressed file (progress, messages), bounded output per call, a stream cut
short told apart from corrupt data.

A compressed file is recognised by its magic bytes, never by its name (gzip ``1f 8b``, zstd ``28 b5 2f
fd``, lz4 ``04 22 4d 18``; zstd and lz4 files may start with skippable frames). Names matter only where
no content can be read yet: the folder scan and the naming of outputs (see ``split_name``).
"""
from __future__ import annotations

import os
import queue
import re
import struct
import threading
import zlib

from .capture import _PCAP_MAGICS, _SHB_MAGIC, CaptureError

KINDS = ("gzip", "zstd", "lz4")
SUFFIX = {"gzip": ".gz", "zstd": ".zst", "lz4": ".lz4"}             # what an output gets
NAME_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4"}    # what names use
# Output levels, chosen by measurement (docs/ARCHITECTURE.md, "Compressed captures"): the fastest setting
# of each that keeps most of its ratio. gzip 1 compresses about twice as fast as gzip's default 6 for 5 %
# more bytes; zstd 1 about twice as fast as zstd's default 3 for 10 % more bytes, faster than Remove Dupes
# alone; lz4's default (0) is its fast mode.
LEVELS = {"gzip": 1, "zstd": 1, "lz4": 0}

PIECE = 64 * 1024           # compressed bytes fed at a time: an error's offset is known to within a piece
VERIFY_LIMIT = 64 << 20     # after the capture inside looked damaged: compressed bytes checked for corruption
_QUEUE_CHUNKS = 4           # writer: chunks (~1 MiB each) waiting for the compressing thread
_AHEAD = 2                  # reader: MiB decompressed ahead of the capture reader (ReadAhead)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_SKIPPABLE = struct.Struct("<II")       # magic 0x184D2A50..0x184D2A5F, then the frame's size
_LZ4_HISTORY = 65536                    # how far back an lz4 match may reach


def _is_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


def detect(head: bytes) -> str | None:
    """The compression of a stream from its first bytes: "gzip", "zstd", "lz4" or None (not compressed).
    Skippable frames at the start (zstd's and lz4's, e.g. pzstd's) are walked as far as ``head`` goes."""
    pos = 0
    for _ in range(64):
        part = head[pos:pos + 4]
        if part[:2] == _GZIP_MAGIC and pos == 0:
            return "gzip"
        if part == _ZSTD_MAGIC:
            return "zstd"
        if part == _LZ4_MAGIC:
            return "lz4"
        if not _is_skippable(part) or len(head) < pos + 8:
            return "zstd" if pos else None      # a skippable frame then more than head holds: zstd's
        pos += 8 + _SKIPPABLE.unpack_from(head, pos)[1]
    return None


def sniff(path) -> str | None:
    """The compression of the file at ``path`` from its first bytes (None when plain or unreadable: the
    reader reports why). Reads at most 64 KiB."""
    try:
        with open(path, "rb") as fh:
            return detect(fh.read(PIECE))
    except OSError:
        return None


def holds_capture(path) -> bool:
    """Whether the file's data, decompressed when it is compressed, starts like a pcap or pcapng file.
    Reads little: one piece, or one block of an lz4 file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(PIECE)
            kind = detect(head)
            if kind is not None:
                head = DecompressingReader(fh, kind, head).read(4)
    except (OSError, CaptureError):
        return False
    return bytes(head[:4]) in _PCAP_MAGICS or bytes(head[:4]) == _SHB_MAGIC


def estimated_size(path, size: int) -> int:
    """The decompressed size of a compressed file of ``size`` bytes, estimated from its first MiB (stages
    size their tables from it once; a wrong guess costs a table growth, never a wrong result)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(PIECE)
            kind = detect(head)
            if kind is None:
                return size
            reader = DecompressingReader(fh, kind, head)
            out = 0
            while reader.position < (1 << 20) and out < (256 << 20):
                got = len(reader.read(1 << 20))
                if not got:
                    return out                  # all of it
                out += got
            return int(size * out / max(reader.position, 1))
    except (OSError, CaptureError):
        return size


def split_name(name: str) -> tuple[str, str]:
    """``(name without its compression suffix, that suffix as spelled)``; ``("x.pcap", ".gz")`` for
    ``x.pcap.gz``, ``("x.pcap", "")`` for ``x.pcap``."""
    root, ext = os.path.splitext(name)
    if root and ext.lower() in NAME_SUFFIXES:
        return root, ext
    return name, ""


def output_kind(choice: str, input_kind: str | None) -> str | None:
    """The output's compression for the setting ``choice`` ("same", "none", "gzip", "zstd", "lz4")."""
    if choice == "same":
        return input_kind
    return None if choice == "none" else choice


def words(input_kind: str | None, output_kind: str | None, short: bool = False) -> str:
    """How a job's input and output were compressed, in a few words ("" when neither was): "zstd-compressed
    in and out", "gzip-compressed in, written uncompressed" …; ``short``: "zstd in and out", "gzip in,
    plain out" …"""
    if not (input_kind or output_kind):
        return ""
    if short:
        if input_kind == output_kind:
            return f"{input_kind} in and out"
        return f"{input_kind or 'plain'} in, {output_kind or 'plain'} out"
    if input_kind and input_kind == output_kind:
        return f"{input_kind}-compressed in and out"
    if input_kind:
        return f"{input_kind}-compressed in, written " + (f"{output_kind}-compressed" if output_kind
                                                         else "uncompressed")
    return f"written {output_kind}-compressed"


def _codec(kind: str):
    """(new decoder, the exceptions it raises on bad data)."""
    if kind == "gzip":
        return (lambda: zlib.decompressobj(31)), (zlib.error,)
    if kind == "zstd":
        zstd = _zstd()
        return zstd.ZstdDecompressor, (zstd.ZstdError,)
    import lz4.frame
    return lz4.frame.LZ4FrameDecompressor, (RuntimeError, ValueError)


def _zstd():
    try:
        from compression import zstd            # Python 3.14 and later
    except ImportError:
        from backports import zstd              # the same module for older Pythons
    return zstd


class CompressedDataError(CaptureError):
    """Corrupt compressed data: one sentence naming the format and the offset in the compressed file.
    A checksum that fails at the end of a member or frame names that member's range: the damage is in it."""

    def __init__(self, kind: str, offset: int, detail: str, member: tuple | None = None):
        if "too much memory" in detail:     # zstd --long=28 or more: windows above zstd's default limit
            text = (f"the {kind} data needs a window of more than 128 MiB to decompress (as zstd --long=28 "
                    f"or more makes), above what this reader allows, at byte {offset:,} of the compressed "
                    f"file; decompress it with zstd --long=31 -d first")
        elif member is not None and "check" in detail.lower():
            text = (f"the {kind} data is corrupt somewhere in bytes {member[0]:,}–{member[1]:,} of the "
                    f"compressed file ({detail})")
        else:
            text = f"the {kind} data is corrupt near byte {offset:,} of the compressed file ({detail})"
        super().__init__(text, offset)

    def __str__(self) -> str:
        return self.reason


class CutBeforeCapture(CaptureError):
    """A compressed file cut short before its capture's header could be decoded (zstd and lz4 give
    nothing of a block they do not have whole: a small capture cut in half gives no byte). A stream cut
    short is a capture cut short, so this is no failure: the executor writes an output with no packet."""

    def __init__(self, kind: str):
        super().__init__(f"the {kind} stream is cut short before the capture's header could be decoded, so "
                         f"no packet could be read from it", 0, located=False)
        self.compression = kind


def _detail(exc: Exception) -> str:
    """The library's words for what is wrong, without its prefixes."""
    text = str(exc)
    for prefix in ("Unable to decompress Zstandard data: ", "LZ4F_decompress failed with code: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.startswith("Error ") and ": " in text:          # zlib: "Error -3 while decompressing data: …"
        text = text.split(": ", 1)[1]
    if text.startswith("ERROR_"):                           # lz4: ERROR_contentChecksum_invalid
        text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text[6:].replace("_", " ")).lower()
    return (text[:1].lower() + text[1:]) if text else type(exc).__name__


class DecompressingReader:
    """The decompressed bytes of a gzip, zstd or lz4 stream, for CaptureReader: ``read(n)`` gives ``n``
    bytes unless the data ends. Members and frames are read one after another; memory stays bounded (the
    decoder's window plus one read). ``position`` is the compressed bytes consumed (progress).

    The end of the file inside compressed data is a stream cut short: the data ends there and ``notes``
    says so (the capture reader then keeps the complete packets). Corrupt data raises
    CompressedDataError; bytes after the last member or frame that are not of the same kind are ignored,
    with a note.
    """

    def __init__(self, raw, kind: str, head: bytes = b"", size: int = 0):
        self.raw = raw
        self.kind = kind
        self.size = size                    # the compressed file's size, when known (notes)
        self.notes: list[str] = []
        self.truncated = False
        self.members = 0                    # members / frames finished
        self._new, self._errors = _codec(kind)
        self._zlib = kind == "gzip"
        self._dec = self._new()
        self._pending = bytes(head)         # compressed bytes read, not yet given to the decoder
        self._fed = len(self._pending)      # compressed bytes read from raw
        self._at = 0                        # where the last input given to the decoder starts
        self._raw_eof = False
        self._done = False
        self._idle = 0
        self._extra = b""
        self._member_at = 0                 # where the current member or frame starts
        self._tail = b"" if kind == "lz4" else None     # lz4: the frame's last 64 KiB out (_lz4_cut_block)
        self.piece = PIECE                  # compressed bytes read and fed at a time

    @property
    def position(self) -> int:
        return self._fed - len(self._pending)

    def read(self, n: int) -> bytes:
        parts = [self._extra] if self._extra else []
        got = len(self._extra)
        while got < n and not self._done:
            out = self._step(n - got)
            if out:
                parts.append(out)
                got += len(out)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self._extra = data[n:]              # only ever a cut lz4 block's start (more than asked for)
        return data[:n] if self._extra else data

    def verify_rest(self, limit: int = VERIFY_LIMIT) -> None:
        """Decode on (output discarded) through at most ``limit`` more compressed bytes: raises
        CompressedDataError where the data is corrupt. For telling corrupt compressed data (whose checksum
        may come only at the end of its member or frame) from a damaged capture inside good data."""
        stop = self.position + limit
        while not self._done and self.position < stop:
            self._step(1 << 20)

    def explain(self, exc: CaptureError) -> CaptureError:
        """The error to raise for ``exc``, met in the capture inside: the compressed data's own corruption
        when decoding on finds it there (its checksum may come only at the end of its member or frame,
        after the damage reached the capture reader), else ``exc`` saying it is about decompressed data."""
        if isinstance(exc, CompressedDataError):
            return exc
        if self.truncated and not exc.offset and "cut short" in exc.reason:
            return CutBeforeCapture(self.kind)      # the capture's own header is cut
        try:
            self.verify_rest()
        except CompressedDataError as corrupt:
            return corrupt
        exc.compression = self.kind
        return exc

    def no_data(self) -> CaptureError:
        """The error for a compressed file that gives no byte of data."""
        if self.truncated:
            return CutBeforeCapture(self.kind)
        return CaptureError(f"the {self.kind}-compressed file holds no data", 0, located=False)

    def close(self) -> None:
        self.raw.close()

    # internals --------------------------------------------------------------------------------------
    def _piece(self) -> bytes:
        if self._raw_eof:
            return b""
        try:
            data = self.raw.read(self.piece)
        except OSError as exc:
            raise CaptureError(f"cannot read the file: {exc.strerror or exc}", self._fed) from None
        if not data:
            self._raw_eof = True
        self._fed += len(data)
        return data

    def _step(self, want: int) -> bytes:
        """Some output (maybe none) with progress made: input consumed, a member ended, or the end."""
        dec = self._dec
        if dec.eof:
            self._next_member()
            return b""
        if self._zlib or dec.needs_input:
            data = self._pending or self._piece()
            self._pending = b""
        else:
            data = b""                          # output is waiting in the decoder
        if data:
            self._at = self.position - len(data)
        try:
            out = dec.decompress(data, want)
        except self._errors as exc:
            raise CompressedDataError(self.kind, self._at, _detail(exc),
                                      (self._member_at, self.position)) from None
        if self._zlib:      # at the end of a member zlib leaves the rest in both; unused_data is used
            self._pending = b"" if dec.eof else dec.unconsumed_tail
        if out or data or dec.eof:
            self._idle = 0
            if self._tail is not None and out:
                self._tail = out[-_LZ4_HISTORY:] if len(out) >= _LZ4_HISTORY else \
                    (self._tail + out)[-_LZ4_HISTORY:]
        elif self._raw_eof and (self._zlib or dec.needs_input):
            return self._end_inside_stream()    # no more input, and the decoder has nothing left
        else:
            self._idle += 1                     # guard: a decoder that neither gives nor takes
            if self._idle > 8:
                raise CompressedDataError(self.kind, self._at, "the decoder stopped making progress")
        return out

    def _end_inside_stream(self) -> bytes:
        """The file ends inside a member or frame: what the decoder could not give of its last block, when
        it can be had (lz4), then the end of the data, noted."""
        self._done = True
        self.truncated = True
        self.notes.append(f"the {self.kind} stream is cut short: the compressed file ends inside "
                          f"compressed data (at byte {self._fed:,}); the capture ends with the last "
                          f"complete packet before that point")
        if self._tail is not None:
            try:
                return _lz4_cut_block(self.raw, self._member_at, self._tail)
            except (OSError, ValueError, IndexError, AttributeError, struct.error):
                pass            # not seekable, or not what it should be: the data ends at the last block
        return b""

    def _next_member(self) -> None:
        """After a member or frame: the next one, the end of the file, or ignored trailing bytes."""
        self.members += 1
        rest = self._dec.unused_data or b""
        head = bytes(rest) + self._pending
        self._pending = b""
        while len(head) < 4 and not self._raw_eof:
            head += self._piece()
        if not head:
            self._done = True
            return
        if (head[:2] == _GZIP_MAGIC if self._zlib else (head[:4] in (_ZSTD_MAGIC, _LZ4_MAGIC)
                                                        or _is_skippable(head))):
            self._dec = self._new()
            self._pending = head
            self._member_at = self.position
            if self._tail is not None:
                self._tail = b""
            return
        ignored = len(head)
        while not self._raw_eof:
            ignored += len(self._piece())
        self._done = True
        self.notes.append(f"the last {ignored:,} bytes of the file are not {self.kind} data and were "
                          f"ignored")


class ReadAhead:
    """A DecompressingReader run on a thread of its own, ``_AHEAD`` MiB ahead of its reader: the codecs
    release the GIL, so decompressing overlaps the packet work where a core is free. The same interface;
    an error of the thread is raised where the data it stopped at is reached.

    The thread feeds its decoder a MiB at a time, not 64 KiB: every call into a codec gives up the GIL,
    and taking it back from a busy main thread can take up to the switch interval (5 ms); 16 times fewer
    calls cost 3 s less CPU and 1.4 s less time on the 623 MB bench capture as .gz, all three operations.
    An error's offset is then known to within a MiB."""

    def __init__(self, reader: DecompressingReader):
        self.reader = reader
        self.kind = reader.kind
        reader.piece = 1 << 20
        self.position = reader.position
        self._queue: queue.Queue = queue.Queue(_AHEAD)
        self._rest = b""
        self._end = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"pktmask-read-{self.kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader, put = self.reader, self._queue.put
        try:
            while not self._stop:
                data = reader.read(1 << 20)
                put((data, reader.position, None))
                if not data:
                    return
        except BaseException as exc:
            put((b"", reader.position, exc))

    def read(self, n: int) -> bytes:
        parts = [self._rest] if self._rest else []
        got = len(self._rest)
        while got < n and not self._end:
            data, self.position, error = self._queue.get()
            if error is not None:
                self._end = True
                raise error
            if not data:
                self._end = True
            parts.append(data)
            got += len(data)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self._rest = data[n:]
        return data[:n] if self._rest else data

    def _halt(self) -> None:
        """Stop the thread (what it read ahead is dropped); the reader is then this thread's alone."""
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)       # a put() waiting for room returns
            except queue.Empty:
                pass
        self._end = True

    @property
    def notes(self) -> list:
        return self.reader.notes

    @property
    def truncated(self) -> bool:
        return self.reader.truncated

    def explain(self, exc: CaptureError) -> CaptureError:
        self._halt()
        return self.reader.explain(exc)

    def no_data(self) -> CaptureError:
        self._halt()
        return self.reader.no_data()

    def close(self) -> None:
        self._halt()
        self.reader.close()


class CompressingWriter:
    """A write-only file object that compresses into ``raw`` on a thread of its own, so that compressing
    overlaps the packet work (the codecs release the GIL). ``write()`` hands over whole buffers (the
    capture writer's ~1 MiB flushes; never changed afterwards) and blocks while ``_QUEUE_CHUNKS`` wait;
    ``written`` counts the compressed bytes in ``raw`` so far. ``close()`` ends the stream; ``abort()``
    stops without ending it. An error of the thread (disk full) is raised by the next write or close."""

    def __init__(self, raw, kind: str, level: int | None = None):
        self.raw = raw
        self.kind = kind
        self.level = LEVELS[kind] if level is None else level
        self.written = 0
        self._compress, self._finish, first = _compressor(kind, self.level)
        self._queue: queue.Queue = queue.Queue(_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._stop = False
        self._closed = False
        if first:
            self._out(first)
        self._thread = threading.Thread(target=self._run, name=f"pktmask-{kind}", daemon=True)
        self._thread.start()

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        if self._error is not None:
            self._raise()
        if self._closed:
            raise ValueError("write to a closed CompressingWriter")
        if isinstance(data, memoryview):
            data = bytes(data)
        if data:
            self._queue.put(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """End the compressed stream (everything written is in ``raw``, which stays open)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self._raise()

    def abort(self) -> None:
        """Stop the thread without ending the stream (the caller discards the file). Idempotent."""
        if self._thread.is_alive():
            self._stop = True
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _raise(self):
        error = self._error
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, error.filename)
        raise error

    def _out(self, data) -> None:
        if data:
            self.raw.write(data)
            self.written += len(data)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            data = get()
            if self._stop or self._error is not None:
                if data is None:
                    return
                continue                # drain, so that a blocked write() returns
            try:
                if data is None:
                    self._out(self._finish())
                    return
                self._out(self._compress(data))
            except BaseException as exc:
                self._error = exc
                if data is None:
                    return


def _compressor(kind: str, level: int) -> tuple:
    """(compress(data) -> bytes, finish() -> bytes, the stream's first bytes)."""
    if kind == "gzip":
        obj = zlib.compressobj(level, zlib.DEFLATED, 31)
        return obj.compress, obj.flush, b""
    if kind == "zstd":
        zstd = _zstd()
        P = zstd.CompressionParameter
        obj = zstd.ZstdCompressor(options={P.compression_level: level, P.checksum_flag: 1})
        return obj.compress, obj.flush, b""
    import lz4.frame
    obj = lz4.frame.LZ4FrameCompressor(compression_level=level, content_checksum=True)
    return obj.compress, obj.flush, obj.begin()


def compress_file(src_path, dst, kind: str, level: int | None = None, tick=None) -> int:
    """Compress the file ``src_path`` into the open binary file ``dst`` (streaming, bounded memory) and
    check the result by decompressing it again; returns the compressed size. ``tick()`` is called every
    chunk (it may raise to stop)."""
    level = LEVELS[kind] if level is None else level
    compress, finish, first = _compressor(kind, level)
    crc = size = 0
    start = dst.tell()
    with open(src_path, "rb") as src:
        dst.write(first)
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            dst.write(compress(chunk))
            if tick is not None:
                tick()
        dst.write(finish())
    dst.flush()
    written = dst.tell() - start
    # read back: the compressed file must give exactly the bytes compressed
    with open(dst.name, "rb") as fh:
        fh.seek(start)
        reader = DecompressingReader(fh, kind, size=written)
        check = got = 0
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            check = zlib.crc32(chunk, check)
            got += len(chunk)
            if tick is not None:
                tick()
        if reader.truncated or (got, check) != (size, crc):
            raise CaptureError(f"the {kind}-compressed output does not read back as the data compressed",
                               0, located=False)
    return written


# ---------------------------------------------------------------------------------------------------
# lz4: the block a cut-short file ends in

def _lz4_cut_block(raw, frame_at: int, history: bytes) -> bytes:
    """The decompressed start of the block that an lz4 file cut short ends in.

    The library decodes whole blocks only, and the lz4 tool writes blocks of 4 MiB: without this, a cut
    file loses up to 4 MiB of packets (all of a smaller capture). lz4's block format is a plain sequence
    of literal runs and back-references, so its first part decodes without the rest. Walks the frame from
    ``frame_at`` (block headers only; ``raw`` must be seekable) to the last block; ``history`` is the last
    64 KiB the frame gave (back-references of linked blocks reach into it). An uncompressed last block was
    given whole by the library already.
    """
    raw.seek(frame_at)
    head = raw.read(7)
    if head[:4] != _LZ4_MAGIC:
        return b""
    flg = head[4]
    block_checksum, linked = flg & 0x10, not flg & 0x20
    raw.seek(frame_at + 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0))
    while True:
        size = raw.read(4)
        if len(size) < 4:
            return b""
        size = struct.unpack("<I", size)[0]
        if size == 0:
            return b""                          # the frame ended: nothing is cut
        length = size & 0x7FFFFFFF
        start = raw.tell()
        raw.seek(0, os.SEEK_END)
        if raw.tell() < start + length:         # the cut block
            if size & 0x80000000:
                return b""
            raw.seek(start)
            return _lz4_block_prefix(raw.read(length), history if linked else b"")
        raw.seek(start + length + (4 if block_checksum else 0))


def _lz4_block_prefix(src: bytes, history: bytes) -> bytes:
    """Decode the lz4 block that ``src`` is the start of, as far as it goes (a prefix of its output)."""
    out = bytearray(history)
    begin = len(out)
    i, n = 0, len(src)
    try:
        while i < n:
            token = src[i]
            i += 1
            run = token >> 4
            if run == 15:
                while True:
                    b = src[i]
                    i += 1
                    run += b
                    if b != 255:
                        break
            out += src[i:i + run]
            i += run
            if i + 2 > n:
                break
            back = src[i] | (src[i + 1] << 8)
            i += 2
            length = token & 15
            if length == 15:
                while True:
                    b = src[i]
                    i += 1
                    length += b
                    if b != 255:
                        break
            length += 4
            if not 0 < back <= len(out):
                break                           # not a valid reference: stop before it
            at = len(out) - back
            if back >= length:
                out += out[at:at + length]
            else:                               # overlapping: the last ``back`` bytes repeat
                out += (out[at:] * (length // back + 1))[:length]
    except IndexError:
        pass                                    # the cut came inside a length: that sequence is lost
    return bytes(out[begin:])
