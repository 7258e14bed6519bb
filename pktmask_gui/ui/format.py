"""Small, Qt-free text helpers for the GUI: sizes, durations, counts, and a job's result in plain words."""
from __future__ import annotations

import functools


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            if unit == "bytes":
                return f"{int(size)} bytes" if size != 1 else "1 byte"
            return f"{size:.1f} {unit}" if size < 100 else f"{size:.0f} {unit}"
        size /= 1024
    return f"{n} bytes"


def human_duration(seconds: float | None) -> str:
    """0:07, 1:05, 1:02:03 — a clock-like duration, as file-transfer clients show it."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def count(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def _words(key: str) -> str:
    return key.replace("_", " ")


def _n(counts: dict, key: str) -> int:
    value = counts.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def describe_stage_counts(name: str, title: str, counts: dict) -> str:
    """One line per stage for the queue and the summary, in words; the JSON export keeps every count."""
    if name == "dedup":
        text = f"{title}: {plural(_n(counts, 'duplicates_removed'), 'duplicate frame')} removed"
        if "frames" in counts:
            text += f" of {_n(counts, 'frames'):,}"
        mode = counts.get("mode")
        if isinstance(mode, str) and mode != "whole file":
            text += f" (memory pressure: duplicates searched in a {mode})"
        return text
    if name == "anonymize":
        text = f"{title}: {plural(_n(counts, 'addresses_mapped'), 'address', 'addresses')} anonymized"
        v4, v6 = _n(counts, "ipv4_addresses_mapped"), _n(counts, "ipv6_addresses_mapped")
        if v4 or v6:
            text += f" ({v4:,} IPv4, {v6:,} IPv6)"
        extras = []
        if _n(counts, "addresses_kept"):
            extras.append(f"{_n(counts, 'addresses_kept'):,} kept as configured")
        if _n(counts, "macs_mapped"):
            extras.append(f"{plural(_n(counts, 'macs_mapped'), 'MAC address', 'MAC addresses')} anonymized")
        if _n(counts, "metadata_addresses_mapped"):
            extras.append(f"{_n(counts, 'metadata_addresses_mapped'):,} in pcapng metadata")
        if _n(counts, "frames_not_inspected"):
            extras.append(f"{plural(_n(counts, 'frames_not_inspected'), 'frame')} not inspected")
        return text + ("; " + ", ".join(extras) if extras else "")
    if name == "mask":
        text = (f"{title}: {plural(_n(counts, 'frames_masked'), 'frame')} masked "
                f"({human_size(_n(counts, 'bytes_masked'))} of payload masked, "
                f"{human_size(_n(counts, 'bytes_kept'))} kept)")
        extras = []
        if _n(counts, "tls_flows"):
            extras.append(f"{plural(_n(counts, 'tls_flows'), 'TLS flow')} recognised")
        if _n(counts, "frames_trimmed"):
            extras.append(f"{plural(_n(counts, 'frames_trimmed'), 'frame')} trimmed")
        if _n(counts, "streams_with_gaps"):
            extras.append(f"{plural(_n(counts, 'streams_with_gaps'), 'stream')} with gaps")
        if _n(counts, "uninspected_frames"):
            extras.append(f"{plural(_n(counts, 'uninspected_frames'), 'frame')} not inspected")
        return text + ("; " + ", ".join(extras) if extras else "")
    if name == "names":
        kinds = counts.get("names_by_kind") if isinstance(counts.get("names_by_kind"), dict) else {}
        text = f"{title}: {_n(counts, 'names_pseudonymized'):,} pseudonymized"
        if kinds:
            text += " (" + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in kinds.items()) + ")"
        kept = counts.get("names_kept_by_rule") if isinstance(counts.get("names_kept_by_rule"), dict) else {}
        extras = [f"{sum(kept.values()):,} kept by rule (" + ", ".join(f"{k} {v:,}" for k, v in kept.items()) + ")"
                  ] if kept else []
        if _n(counts, "names_zeroed"):
            extras.append(f"{plural(_n(counts, 'names_zeroed'), 'name')} zeroed in "
                          f"{plural(_n(counts, 'frames_zeroed'), 'frame')} (not rewritable in place)")
        return text + ("; " + ", ".join(extras) if extras else "")
    # Any other stage (new ones, the metadata scrub): its non-zero whole-number counts, in words.
    items = [(k, v) for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool) and v]
    if name == "scrub":
        # The settings call it "pcapng metadata"; the stage's own title is an engine name.
        removed = ", ".join(_counted(v, _words(k)) for k, v in items)
        return f"pcapng metadata removed: {removed}" if removed else "pcapng metadata: nothing to remove"
    return f"{title}: " + (", ".join(f"{_words(k)} {v:,}" for k, v in items) if items else "done")


def _counted(n: int, words: str) -> str:
    """3 "name resolution blocks" -> "3 name resolution blocks"; 1 -> "1 name resolution block"."""
    if n == 1 and words.endswith("s") and not words.endswith("ss"):
        words = words[:-1]
    return f"{n:,} {words}"


def short_stage_text(name: str, title: str, counts: dict) -> str:
    """A few words per stage for a table cell: "76 dupes removed", "71 addresses anonymized", …"""
    if name == "dedup":
        return f"{_n(counts, 'duplicates_removed'):,} dupes removed"
    if name == "anonymize":
        return f"{plural(_n(counts, 'addresses_mapped'), 'address', 'addresses')} anonymized"
    if name == "mask":
        return f"{plural(_n(counts, 'frames_masked'), 'frame')} masked"
    if name == "scrub":
        removed = sum(v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool))
        return f"{plural(removed, 'metadata item')} removed" if removed else ""
    if name == "names":
        return f"{plural(_n(counts, 'names_pseudonymized'), 'host name')} pseudonymized"
    if name == "memory":
        return "memory pressure handled"
    return title


# --- a job result in words (the queue's Result column, the log, the summary) ---------------------------
@functools.lru_cache(maxsize=64)        # a lookup per stage and result: the import machinery costs ~20 µs
def _stage_title(name: str) -> str:
    try:
        from ..stages import stage_by_name
        return stage_by_name(name).title
    except (KeyError, ImportError):
        return {"memory": "Memory"}.get(name, name.replace("_", " ").title())


@functools.lru_cache(maxsize=64)
def _stage_position(name: str) -> int:
    try:
        from ..stages import stage_by_name
        return stage_by_name(name).order
    except (KeyError, ImportError):
        return 10**6


def duplicates_removed(result) -> int | None:
    dedup = (result.stages or {}).get("dedup")
    if not isinstance(dedup, dict):
        return None
    for key in ("duplicates_removed", "removed", "duplicates"):
        if isinstance(dedup.get(key), int):
            return dedup[key]
    return None


def _user_order(stages: dict) -> list:
    """Stage reports in the order the user sees the operations (Remove Dupes, Anonymize IPs, Mask
    Payloads, then the metadata scrub), not the order the engine ran them in; "memory" last."""
    return sorted((stages or {}).items(), key=lambda item: _stage_position(item[0]))


def stage_lines(result) -> list[str]:
    lines = []
    for name, counts in _user_order(result.stages):
        if name == "memory" and isinstance(counts, dict):
            events = counts.get("pressure_events")
            n = events if isinstance(events, int) else len(events or [])
            lines.append(f"Memory pressure: {plural(n, 'time')}; caches were released, no packet was dropped")
            continue
        lines.append(describe_stage_counts(name, _stage_title(name), counts if isinstance(counts, dict) else {}))
    return lines


def short_lines(result, skip=()) -> str:
    parts = [short_stage_text(name, _stage_title(name), counts if isinstance(counts, dict) else {})
             for name, counts in _user_order(result.stages) if name not in skip]
    return " · ".join(p for p in parts if p)
