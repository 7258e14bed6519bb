"""Stages: sans-I/O transformations of batches of capture records.

A stage never opens files, threads or Qt; the executor (pipeline.py) feeds it batches of record tuples
(see capture.py and docs/ARCHITECTURE.md) and writes what it returns.
"""
from __future__ import annotations

import bisect

import importlib
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..layout import UNINSPECTABLE

if TYPE_CHECKING:
    from ..settings import Settings

# One capture record, (data, link type, timestamp, original length, interface, block): see capture.py. A
# batch is a list of them; a stage reads and returns batches.
Record = tuple[Any, ...]
Batch = list[Record]


class StageError(Exception):
    """A stage cannot produce a safe output: the file fails with this one-sentence reason."""

    kind = "stage"              # for the job result's error_kind (pipeline.describe_failure)


@dataclass(frozen=True)
class Option:
    """One stage option: the settings dialog and the settings file are built from this schema."""

    key: str
    label: str
    kind: str  # "bool" | "int" | "choice" | "str" | "cidr_list" | "int_list" | "domain_list"
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


@dataclass
class StageContext:
    """What a stage may use from its surroundings."""

    log: logging.Logger | logging.LoggerAdapter[Any] = field(default_factory=lambda: logging.getLogger(__name__))
    warnings: list[str] = field(default_factory=list)
    config_dir: Any = None      # pathlib.Path of the settings folder (key file lives there)
    key: bytes | None = None    # 32-byte anonymization key, when the anonymizer runs
    extra: dict[str, Any] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        """Record a warning for the job result (shown to the user, once per distinct message)."""
        if message not in self.warnings:
            self.warnings.append(message)
            self.log.warning(message)


class Stage:
    """A sans-I/O transformation of record batches, and what the executor (pipeline.py) may rely on.

    The executor names no stage: what it must know of one is declared here, as class attributes.
    """

    name = ""                   # id: CLI flag --<name>, settings key, report key
    title = ""                  # the user's name for it
    description = ""            # a sentence or two for tooltips and --help
    order = 50                  # position in the pipeline the user sees
    run_order: int | None = None    # execution position when it must differ from ``order`` (see pipeline)
    OPTIONS: tuple[Option, ...] = ()    # schema: the settings dialog, settings file and CLI are built from it
    needs_prescan = False       # the executor first runs prescan(batch) over the whole input
    self_check = False          # the executor calls check() / check_spans() on the output read back
    hidden = False              # not an operation the user picks
    implicit = False            # hidden and run whenever an operation runs and wanted() says so
    needs_key = False           # the executor loads the anonymization key into StageContext.key
    drops_frames = False        # decides once per frame; later passes repeat the decisions (replayer)
    pcapng_only = False         # nothing to do in a pcap file: the main pass leaves it out there
    stand_in = False            # a stand-in a later pass uses (a replayer): not registered as a stage
    prescan_transparent = False  # a later stage's pre-scan need not run it first (it changes no length or
                                 # structure a pre-scan reads: host names)
    segmentable = False         # its main pass can run on segments of the input (segments.py: the hooks below)

    def __init__(self, options: dict[str, Any] | None, context: StageContext):
        merged = {opt.key: opt.default for opt in self.OPTIONS}
        merged.update(options or {})
        self.options = merged
        self.context = context

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        """This stage's options from the settings (``settings.Settings``)."""
        return settings.options_for(cls.name)

    @classmethod
    def wanted(cls, settings: Settings, operations: tuple[str, ...] = ()) -> bool:  # noqa: ARG003 (the signature stages override)
        """For an implicit stage: should it run beside the operations the user chose (``operations``)?"""
        return True

    def prescan(self, batch: Batch) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        return batch

    def finish(self) -> None:
        """The end of a pass (a replaying stage checks there that it met every frame it decided on)."""

    def replayer(self, context: StageContext) -> Stage:
        """For a stage that drops frames: a stand-in that repeats this pass's decisions in a later pass."""
        raise NotImplementedError(f"{self.name} decides nothing a later pass could replay")

    def check(self, before: Batch, after: Batch) -> None:
        pass

    def check_spans(self, before: Batch, buf: bytes, starts: list[int], ends: list[int], linktype: int) -> None:
        """check() for an output read back as frame spans (a pcap file: ``buf[starts[i]:ends[i]]``, all of
        ``linktype``); by default as records (the times and lengths in them are not the output's)."""
        self.check(before, [(buf[a:b], linktype, 0, b - a, 0, None) for a, b in zip(starts, ends)])

    def will_check(self) -> None:
        """Called by the main pass before its first batch when it will call check() on this stage's
        output: a stage may then keep, per frame, what makes its check cheaper (and only then)."""

    def release_memory(self) -> str | None:
        return None

    def report(self) -> dict[str, Any]:
        return {}

    # ---- the main pass on segments of the input, in several processes (segments.py) ---------------------
    def snapshot(self) -> Any:
        """First pass, after a batch that may end a segment: what the main pass of a segment starting there
        needs beyond export() (picklable; None: nothing)."""
        return None

    def export(self) -> Any:
        """After the first pass: what every segment's instance needs from this one (picklable)."""
        return None

    def split_hazard(self, points: list[int]) -> str | None:  # noqa: ARG002
        """Why this stage's main pass cannot be cut before these frames (packets that entered it before each
        segment's start), or None when it can."""
        return None

    def split_needs(self, points: list[int]) -> list[Any]:
        """Per split point (as for split_hazard): None, or ``(frame, what)`` when the segment's instance must
        first see the frames after ``frame`` up to the point (``warm(batch, what)``, then ``warm(None,
        what)``) to hold the state the one-core pass holds there."""
        return [None] * len(points)

    def warm(self, batch: list[Any] | None, what: Any) -> None:
        """A batch of the frames before the segment (see split_needs); None: they are over."""

    def segment_start(self, first: int, end: int, shared: Any, at: Any) -> None:
        """This instance runs the main pass over one segment: ``first`` packets entered the stage before the
        segment, ``end`` by its end; ``shared``: export() of the first pass's instance (None: this instance
        made that pass itself), ``at``: its snapshot() at the segment's start."""

    def segment_result(self) -> Any:
        """At the end of a segment: what absorb() needs (picklable)."""
        return None

    def absorb(self, result: Any, baseline: Any) -> None:
        """Fold another segment's segment_result() into this instance (the first segment's), before report().
        ``baseline``: that segment's result after it re-read its section's header blocks (counted by the
        segment that holds them)."""


# ---- frames the walker cannot read (shared by the stages that walk frames) ----------------------------
UNINSPECTED_OPTION = Option(
    "uninspected", "Frames it cannot parse", "choice", "zero",
    "A frame of a link type or encapsulation PktMask cannot parse. zero (default): the frame stays, and every "
    "byte after the last header understood is zeroed, counted and reported. pass: the frame stays unchanged, "
    "addresses and payload included (counted). fail: the whole file fails (--strict).",
    choices=("zero", "pass", "fail"))


def uninspected_policy(merged: dict[str, Any], given: dict[str, Any] | None) -> str:
    """The stage's policy for frames it cannot parse; a settings file of an earlier version may still say
    ``allow_uninspected: true`` (pass) instead."""
    if "uninspected" not in (given or {}) and (given or {}).get("allow_uninspected"):
        return "pass"
    policy = str(merged["uninspected"])
    if policy not in ("zero", "pass", "fail"):
        raise StageError(f"frames that cannot be parsed: the policy must be zero, pass or fail, not {policy!r}")
    return policy


ZEROED_REASONS = 256            # distinct reasons counted (and warned about) one by one; the rest together
OTHER_REASONS = "other reasons"


def _other(key: Any) -> Any:
    return (key[0], OTHER_REASONS) if type(key) is tuple else OTHER_REASONS


class ReasonCounts(dict[Any, int]):
    """Frames counted by reason, at most ``limit`` reasons apart: the smallest ones (in sort order), the other
    reasons' frames together under "other reasons" (per status, for ``(status, reason)`` keys).

    Why the smallest, not the first met: which reasons are counted apart must not depend on the order frames
    come in, so that segments of a file, counted apart, merge (``merge``) into exactly the one-core table
    (segments.py). A reason once moved out never comes back: ``limit`` smaller ones were met. The reasons
    kept are also held in order (``kept``), so that garbage read as an EtherType, a new reason per frame in
    any order, costs a bisection each, not a walk of the table."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.kept: list[Any] = []       # the reasons counted apart, in order

    def add(self, key: Any, n: int = 1) -> None:
        if key in self:
            self[key] += n
            return
        other = _other(key)
        kept = self.kept
        if key == other:
            self[key] = n
        elif len(kept) < self.limit:
            self[key] = n
            bisect.insort(kept, key)
        elif not kept or key > kept[-1]:
            self[other] = self.get(other, 0) + n
        else:                           # it takes the place of the largest
            top = kept.pop()
            moved = _other(top)
            self[moved] = self.get(moved, 0) + self.pop(top)
            self[key] = n
            bisect.insort(kept, key)

    def merge(self, counts: dict[Any, int], baseline: dict[Any, int]) -> None:
        """Add another segment's table ``counts`` less ``baseline`` (what its re-read header blocks counted)."""
        if any(counts.get(key, 0) < n for key, n in baseline.items()):
            from ..segments import SplitInexact

            raise SplitInexact("a reason counted in a segment's header blocks moved out of its table")
        for key, n in counts.items():
            n -= baseline.get(key, 0)
            if n:
                self.add(key, n)


def count_zeroed(counts: ReasonCounts, w: tuple[Any, ...]) -> None:
    """Count a walked frame (frames.walk's result) whose unreadable ranges a stage zeroed, once per reason:
    ``counts[(status, reason)]``. Reasons name numbers from the frame (an EtherType, an OUI): past
    ZEROED_REASONS of them, the others are counted as "other reasons" (see ReasonCounts)."""
    for reason in {b[2] for b in w[7]}:
        counts.add((w[0], reason))


def report_zeroed(counts: dict[tuple[int, str], int], context: StageContext) -> dict[str, int]:
    """``{reason: frames}`` for the report, and a warning per reason (the same sentence from every stage
    that zeroed them, so a job shows it once). Reasons that differ only in their numbers (garbage read as
    an EtherType gives a new one per frame) share one warning past ``GROUPED_AFTER`` of them."""
    out: dict[str, int] = {}
    families: dict[tuple[int, str], list[tuple[str, int]]] = {}
    for (status, reason), n in sorted(counts.items()):
        out[reason] = out.get(reason, 0) + n
        families.setdefault((status, _NUMBER.sub("…", reason)), []).append((reason, n))
    for (status, family), members in families.items():
        if len(members) > GROUPED_AFTER:
            found = (_NUMBER.search(r) for r, _ in members[:GROUPED_AFTER])     # each has one: they differ in it
            shown = ", ".join(m.group() for m in found if m)
            reason = f"{family}: {len(members)} different values, {shown}, …"
        else:
            for reason, n in members:
                _warn_zeroed(context, status, reason, n)
            continue
        _warn_zeroed(context, status, reason, sum(n for _, n in members))
    return out


GROUPED_AFTER = 3
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\b\d+\b")


def _warn_zeroed(context: StageContext, status: int, reason: str, n: int) -> None:
    frames = "1 frame" if n == 1 else f"{n:,} frames"
    if status == UNINSPECTABLE:
        context.warn(f"{frames} could not be inspected ({reason}): zeroed after the last header understood")
    else:
        context.warn(f"{frames} held {reason}: those bytes were zeroed")


# Modules that define stages; a new stage is one module and one line here, nothing else.
_STAGE_MODULES = ("dedup", "anonymize", "names", "mask", "scrub")


def _load() -> list[type[Stage]]:
    found = []
    for mod_name in _STAGE_MODULES:
        mod = importlib.import_module(f"{__name__}.{mod_name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Stage) and obj is not Stage and obj.name \
                    and obj.__module__ == mod.__name__ and not obj.stand_in:
                found.append(obj)
    return sorted(found, key=lambda cls: cls.order)


_registry: list[type[Stage]] | None = None


def all_stages() -> list[type[Stage]]:
    """Every stage class, hidden ones included, in pipeline order."""
    global _registry
    if _registry is None:
        _registry = _load()
    return list(_registry)


def operations() -> list[type[Stage]]:
    """The stages a user picks (one checkbox / CLI flag each), in pipeline order."""
    return [cls for cls in all_stages() if not cls.hidden]


def stage_by_name(name: str) -> type[Stage]:
    for cls in all_stages():
        if cls.name == name:
            return cls
    raise KeyError(name)



def validate_option(opt: Option, value: Any) -> str | None:
    """A sentence saying what is wrong with ``value`` for ``opt``, or None when it is acceptable."""
    import ipaddress

    if opt.kind == "bool":
        return None if isinstance(value, bool) else f"{opt.label} must be on or off."
    if opt.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{opt.label} must be a whole number."
        if opt.minimum is not None and value < opt.minimum:
            return f"{opt.label} must be at least {opt.minimum}."
        if opt.maximum is not None and value > opt.maximum:
            return f"{opt.label} must be at most {opt.maximum}."
        return None
    if opt.kind == "choice":
        return None if value in opt.choices else f"{opt.label} must be one of: {', '.join(map(str, opt.choices))}."
    if opt.kind == "str":
        return None if isinstance(value, str) else f"{opt.label} must be text."
    if opt.kind == "cidr_list":
        if not isinstance(value, list):
            return f"{opt.label} must be a list of networks such as 192.0.2.0/24 or 2001:db8::/32."
        for item in value:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                return f"{opt.label}: '{item}' is not a network such as 192.0.2.0/24 or 2001:db8::/32."
        return None
    if opt.kind == "domain_list":
        from ..hostnames import parse_domains
        if not isinstance(value, list):
            return f"{opt.label} must be a list of domains such as example.com."
        try:
            parse_domains(value)
        except ValueError as exc:
            return f"{opt.label}: {exc}."
        return None
    if opt.kind == "int_list":
        if not isinstance(value, list):
            return f"{opt.label} must be a list of numbers."
        lo = 0 if opt.minimum is None else opt.minimum
        hi = 65535 if opt.maximum is None else opt.maximum
        for item in value:
            if not isinstance(item, int) or isinstance(item, bool) or not lo <= item <= hi:
                return f"{opt.label}: '{item}' must be a whole number from {lo} to {hi}."
        return None
    return None
