"""pcapng metadata scrub: removes what a capture says about its people, hosts and keys beside the packets.

Hidden stage (not an operation a user picks): the executor adds it whenever any operation runs, unless
``settings.keep_metadata`` / ``--keep-metadata``. Each item of ``settings.SCRUB_ITEMS`` is an option:

- ``comments``: opt_comment (code 1) in every block whose options we can find (SHB, IDB, EPB, PB, ISB, and
  NRB / DSB when they are kept), and custom options (2988/2989/19372/19373: vendor data) and option codes
  the spec does not define for the block (free data we cannot judge) everywhere;
- ``name_resolution``: Name Resolution Blocks (addresses mapped to host names), dropped whole;
- ``decryption_secrets``: Decryption Secrets Blocks (TLS key logs), dropped whole;
- ``custom_blocks``: custom blocks 0x00000BAD / 0x40000BAD, dropped whole, and custom / undefined options;
- ``section_strings``: SHB shb_hardware / shb_os / shb_userappl (2, 3, 4);
- ``interface_strings``: IDB if_name, if_description, if_IPv4addr, if_IPv6addr, if_MACaddr, if_EUIaddr,
  if_filter, if_os, if_hardware (2-7, 11, 12, 15).

Whatever the items, a running scrub also drops the packet hash options (EPB epb_hash / PB pack_hash, code
3): they hash the *original* frame, so after anonymizing or masking they would let anyone confirm a guess
of the original bytes (and they no longer match); anyone who needs them can recompute them from the output.

SHB and IDB are never dropped and keep what reading needs (link type, snap length, if_tsresol 9,
if_tsoffset 14, if_fcslen 13, speeds, time zone). A record that loses nothing is passed through as the
same tuple, so an input with no metadata to scrub stays byte-identical. Packet records are walked only
when they carry options, with one struct probe per option and no per-packet objects unless an option
must go. Blocks this module does not know (e.g. the systemd journal block 9) pass through unchanged.
"""
from __future__ import annotations


from . import Option, Stage
from ..capture import (CB_COPY, CB_NOCOPY, DSB, EPB, IDB, ISB, META, NRB, PB, SHB, build_options,
                       parse_options, section_endian)
from ..pcapngoptions import has_code, options_start
from ..settings import SCRUB_ITEMS

COMMENT = 1
PACKET_HASH = 3                                                 # epb_hash / pack_hash
CUSTOM_OPTIONS = frozenset((2988, 2989, 19372, 19373))
SHB_STRINGS = frozenset((2, 3, 4))                              # shb_hardware, shb_os, shb_userappl
IDB_STRINGS = frozenset((2, 3, 4, 5, 6, 7, 11, 12, 15))         # names, addresses, filter, os, hardware
# Option codes the pcapng spec defines per block; any other code (unassigned or local use, 0x8000 and up)
# is vendor data we cannot judge, so it goes with the custom options.
KNOWN_OPTIONS = {SHB: range(1, 5), IDB: range(1, 19), ISB: range(1, 9), NRB: range(1, 5), DSB: range(1, 2),
                 EPB: range(1, 8), PB: range(1, 4)}
KNOWN_OPTIONS = {b: frozenset(codes) | CUSTOM_OPTIONS for b, codes in KNOWN_OPTIONS.items()}

class ScrubStage(Stage):
    name = "scrub"
    title = "Scrub metadata"
    description = ("Removes pcapng metadata that can identify people, hosts or keys: comments, name "
                   "resolution, decryption secrets, custom blocks, capture and interface strings.")
    order = 90
    hidden = True
    implicit = True             # runs whenever an operation runs, unless the user keeps the metadata
    pcapng_only = True          # pcap records carry no metadata: the executor skips this stage there
    OPTIONS = tuple(Option(key, label, "bool", True) for key, label in SCRUB_ITEMS.items())

    @classmethod
    def options_from(cls, settings) -> dict:
        return {**settings.scrub, **settings.options_for(cls.name)}    # the settings' own scrub items first

    @classmethod
    def wanted(cls, settings, operations=()) -> bool:  # noqa: ARG003 (Stage.wanted's signature)
        return not settings.keep_metadata

    def __init__(self, options, context):
        super().__init__(options, context)
        opts = self.options
        self._endian = "<"
        self.removed: dict[str, int] = {}
        comments = bool(opts.get("comments"))
        custom = bool(opts.get("custom_blocks"))
        common = set()
        if comments:
            common.add(COMMENT)
        if comments or custom:
            common |= CUSTOM_OPTIONS
        self._packet_codes = frozenset(common | {PACKET_HASH})
        self._other_codes = frozenset(common)           # NRB / DSB options, when those blocks are kept
        self._codes = {
            SHB: frozenset(common | (SHB_STRINGS if opts.get("section_strings") else set())),
            IDB: frozenset(common | (IDB_STRINGS if opts.get("interface_strings") else set())),
            ISB: frozenset(common),
        }
        drop = set()
        if opts.get("name_resolution"):
            drop.add(NRB)
        if opts.get("decryption_secrets"):
            drop.add(DSB)
        if custom:
            drop |= {CB_COPY, CB_NOCOPY}
        self._drop = frozenset(drop)
        self._unknown = comments or custom       # drop option codes the spec does not define

    def _count(self, kind: str, n: int = 1) -> None:
        self.removed[kind] = self.removed.get(kind, 0) + n

    def process(self, batch: list) -> list:
        out = []
        append = out.append
        packet_codes = self._packet_codes
        for rec in batch:
            if rec[1] == META:
                rec = self._meta(rec)
                if rec is not None:
                    append(rec)
                continue
            block = rec[5]
            if block is None or not packet_codes or not block[1] or (block[0] != EPB and block[0] != PB):
                append(rec)           # pcap, no options, SPB or modified pcap (their extra bytes are not options)
                continue
            known = KNOWN_OPTIONS[block[0]] if self._unknown else None
            if has_code(block[1], self._endian, packet_codes, known):
                options = self._strip(parse_options(block[1], self._endian), packet_codes, known)
                block = (block[0], build_options(options, self._endian)) + tuple(block[2:])
                rec = rec[:5] + (block,)
            append(rec)
        return out

    def _meta(self, rec):
        btype = rec[5]
        body = rec[0]
        if btype in self._drop:
            self._count({NRB: "name_resolution_blocks", DSB: "decryption_secrets_blocks"}.get(
                btype, "custom_blocks"))
            return None
        if btype == SHB:
            self._endian = section_endian(body)
        codes = self._codes.get(btype, self._other_codes)
        known = KNOWN_OPTIONS.get(btype) if self._unknown else None
        if not codes and known is None:
            return rec
        fixed = options_start(btype, body, self._endian)
        if fixed is None or not has_code(memoryview(body)[fixed:], self._endian, codes, known):
            return rec
        options = self._strip(parse_options(body[fixed:], self._endian), codes, known, btype)
        return (bytes(body[:fixed]) + build_options(options, self._endian),) + rec[1:]

    def _strip(self, options: list, codes, known=None, btype=None) -> list:
        kept = []
        for code, value in options:
            if code not in codes:
                if known is None or code in known:
                    kept.append((code, value))
                else:
                    self._count("unknown_options")
            elif btype is None and code == PACKET_HASH:
                self._count("packet_hashes")
            elif code == COMMENT:
                self._count("comments")
            elif code in CUSTOM_OPTIONS:
                self._count("custom_options")
            elif btype == SHB:
                self._count("section_strings")
            else:
                self._count("interface_strings")
        return kept

    def report(self) -> dict:
        return dict(sorted(self.removed.items()))

    segmentable = True              # record by record; the section's byte order comes from the SHB

    def segment_result(self) -> dict:
        return dict(self.removed)

    def absorb(self, result, baseline) -> None:
        for kind, n in result.items():
            n -= baseline.get(kind, 0)
            if n:
                self.removed[kind] = self.removed.get(kind, 0) + n
