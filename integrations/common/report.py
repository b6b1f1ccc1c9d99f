"""Console progress, Markdown tables and paired statistics for the integrations (no third-party dependency)."""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import torch

__all__ = ["ProgressBar", "machine_description", "markdown_table", "paired_stats", "summary_rows"]


class ProgressBar:
    """A one-line progress bar on stderr: ``label [#####.....] 12/100 1.3 it/s eta 0:01:07 loss 1.234``.

    On a terminal the line is redrawn in place; otherwise (logs, pipes) a line is written every 10 %.

    Args:
        total: the number of steps.
        label: text in front of the bar.
        stream: where to write (default ``sys.stderr``).
        enabled: ``False`` silences it (non-zero DDP ranks).
    """

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.count = 0
        self.start = time.perf_counter()
        self.last_decile = -1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, count: int, text: str = "") -> None:
        """Show progress ``count`` of ``total`` with an optional trailing ``text``.

        Args:
            count: steps done so far.
            text: extra text (current loss, ...).
        """
        self.count = count
        if not self.enabled:
            return
        decile = 10 * count // self.total
        if not self.tty and decile == self.last_decile and count < self.total:
            return
        self.last_decile = decile
        elapsed = time.perf_counter() - self.start
        rate = count / elapsed if elapsed > 0 else 0.0
        eta = (self.total - count) / rate if rate > 0 else 0.0
        width = 24
        filled = min(width, width * count // self.total)
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"{self.label} [{bar}] {count}/{self.total} {rate:.1f} it/s "
            f"eta {time.strftime('%H:%M:%S', time.gmtime(eta))} {text}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 1) -> str:
    """A Markdown table; floats are printed with ``digits`` decimals.

    Args:
        header: column names.
        rows: the cells, one sequence per row.
        digits: decimals for floats.

    Returns:
        The table text (no trailing newline).
    """

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_rows(named: Sequence[tuple[str, dict[str, float]]], *, scale: float = 100.0) -> tuple[list[str], list[list]]:
    """Header and rows of a table of evaluation summaries (``detection_map(...)["summary"]``), in percent.

    Args:
        named: ``(row name, summary dict)`` pairs sharing the same columns.
        scale: factor applied to the values (100 turns fractions into percent).

    Returns:
        ``(header, rows)`` for :func:`markdown_table`.
    """
    columns = list(named[0][1]) if named else []
    header = ["method", *columns]
    rows = [[name, *(float(summary[column]) * scale for column in columns)] for name, summary in named]
    return header, rows


def paired_stats(differences: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and sign agreement of paired differences (with minus without).

    Args:
        differences: one difference per seed.

    Returns:
        ``{"mean", "std", "positive", "negative", "n"}`` (``std`` is 0 for a single seed).
    """
    n = len(differences)
    mean = sum(differences) / n if n else math.nan
    var = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else 0.0
    return {
        "mean": mean,
        "std": math.sqrt(var),
        "positive": float(sum(d > 0 for d in differences)),
        "negative": float(sum(d < 0 for d in differences)),
        "n": float(n),
    }


def machine_description() -> str:
    """A short description of the machine a result came from (CPU, threads, torch, device).

    Returns:
        e.g. ``"x86_64, 2 torch threads, torch 2.13.0, CPU"``.
    """
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (
        f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {torch.get_num_threads()} torch threads, torch {torch.__version__}, python "
        + f"{platform.python_version()}, {device}"
    )
