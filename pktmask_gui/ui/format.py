"""Small, Qt-free text helpers for the GUI: sizes, durations, counts and stage reports in plain words."""
from __future__ import annotations


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


def describe_stage_counts(title: str, counts: dict) -> str:
    """One line per stage for the summary, e.g. "Remove Dupes: removed 3, kept 17"."""
    if not counts:
        return f"{title}: nothing to report"
    parts = []
    for key, value in counts.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{_words(k)} {v:,}" if isinstance(v, int) else f"{_words(k)} {v}"
                              for k, v in value.items())
            parts.append(f"{_words(key)} ({inner})" if inner else _words(key))
        elif isinstance(value, bool):
            parts.append(f"{_words(key)}: {'yes' if value else 'no'}")
        elif isinstance(value, int):
            parts.append(f"{_words(key)} {value:,}")
        elif isinstance(value, float):
            parts.append(f"{_words(key)} {value:.3g}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{_words(key)}: {', '.join(map(str, value)) or 'none'}")
        else:
            parts.append(f"{_words(key)}: {value}")
    return f"{title}: " + ", ".join(parts)
