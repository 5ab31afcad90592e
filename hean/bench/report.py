"""Presenting harness results: percentile tables, a text histogram, a PNG plot, JSON, .hlog, CLI options.

Every ``hean bench`` target shares these, so all tables look alike and all targets take the same
``--rates --duration --warmup --json --hlog --plot --histogram`` options (:func:`add_harness_args`,
:func:`emit`). Percentiles a rate's sample count cannot support are left blank (rule:
:func:`hean.telemetry.histogram.supported_percentiles`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

from hean.bench.harness import DEFAULT_RATES, PCTS_REPORTED, BenchResult
from hean.commands import emit_json, text_out
from hean.commands.views.units import fmt_ns
from hean.telemetry.histogram import H_BASE, HIST_COUNTS_LEN, hist_value_at_index
from hean.telemetry.hlog import write_hlog

__all__ = [
    "add_harness_args",
    "emit",
    "fmt_ns",
    "fmt_rate",
    "format_table",
    "markdown_table",
    "parse_rates",
    "plot_png",
    "text_histogram",
    "write_bench_hlog",
]

_PCT_LABELS = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p99.9", 99.99: "p99.99", 100.0: "max"}


def fmt_rate(rate: float) -> str:
    """10000 -> 10k/s, 0 -> max."""
    if rate <= 0:
        return "max"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{unit}/s"
    return f"{rate:.3g}/s"


def _rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "achieved", "msgs", "lost"] + [_PCT_LABELS[p] for p in PCTS_REPORTED]
    rows = []
    for r in result.results:
        pct = r.percentiles(PCTS_REPORTED)
        if r.count:
            pct[100.0] = int(r.as_dict()["max_ns"])  # the exact max, not its bucket's upper bound
        rows.append(
            [fmt_rate(r.target_rate), fmt_rate(r.achieved_rate), f"{r.received:,}", f"{r.loss_pct:.2f}%"]
            + [fmt_ns(pct.get(p), missing="") for p in PCTS_REPORTED]
        )
    return head, rows


def format_table(result: BenchResult) -> str:
    """A fixed-width percentile table (one row per rate); blanks = not supported by the sample count."""
    head, rows = _rows(result)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))
    out = [f"{result.name}: latency from scheduled send (ns clock: CLOCK_MONOTONIC)", line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def markdown_table(result: BenchResult) -> str:
    """The same table as GitHub markdown, for BENCHMARKS.md."""
    head, rows = _rows(result)
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    out += ["| " + " | ".join(c or "-" for c in row) + " |" for row in rows]
    return "\n".join(out)


def _decade_edges(lo: int, hi: int) -> list[int]:
    """1-2-5 edges (ns) covering [lo, hi]."""
    edges = []
    k = 0
    while True:
        for m in (1, 2, 5):
            e = m * 10**k
            if e > hi:
                edges.append(e)
                return [x for x in edges if x >= _floor125(lo)]
            edges.append(e)
        k += 1


def _floor125(v: int) -> int:
    if v < 1:
        return 1
    k = int(math.floor(math.log10(v)))
    for m in (5, 2, 1):
        if m * 10**k <= v:
            return m * 10**k
    return 10**k


def text_histogram(hist: np.ndarray, width: int = 50, title: str = "") -> str:
    """The latency distribution as text bars over 1-2-5 ranges (e.g. 1us-2us), with % and counts."""
    counts = hist[H_BASE:]
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return f"{title}(no samples)"
    values = np.array([hist_value_at_index(i) for i in range(HIST_COUNTS_LEN)], dtype=np.int64)
    lo, hi = int(values[nz[0]]), int(values[nz[-1]])
    edges = _decade_edges(lo, hi)
    binned = np.zeros(len(edges) - 1, dtype=np.int64)
    which = np.searchsorted(np.asarray(edges), values[nz], side="right") - 1
    np.add.at(binned, np.clip(which, 0, len(binned) - 1), counts[nz])
    total = int(counts.sum())
    top = int(binned.max()) or 1
    lines = [title] if title else []
    for i, c in enumerate(binned):
        bar = "#" * int(round(width * c / top))
        label = f"{fmt_ns(edges[i]):>6} - {fmt_ns(edges[i + 1]):<6}"
        lines.append(f"{label} |{bar:<{width}}| {100.0 * c / total:6.2f}%  {c:,}")
    return "\n".join(lines)


def plot_png(result: BenchResult, path: str | os.PathLike) -> None:
    """Percentile-distribution plot (HdrHistogram style: x = percentile on a 1/(1-p) log axis)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            f"--plot {path}: matplotlib is not installed (pip install matplotlib); "
            "use --histogram for a text histogram instead"
        ) from None
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in result.results:
        n = r.count
        if n < 2:
            continue
        nines = np.arange(0.0, math.log10(n) + 1e-9, 0.05)  # up to the count's resolution
        pcts = 100.0 * (1.0 - 10.0**-nines)
        vals = [r.percentiles([p]).get(float(p)) for p in pcts]
        xs = [x for x, v in zip(nines, vals, strict=True) if v is not None]
        ys = [v / 1e3 for v in vals if v is not None]
        ax.plot(xs, ys, label=fmt_rate(r.target_rate))
    ticks = list(range(0, 7))
    ax.set_xticks(ticks, [f"{100 * (1 - 10.0**-t):g}" for t in ticks])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us)")
    ax.set_yscale("log")
    ax.set_title(f"{result.name}: latency by percentile (from scheduled send)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_bench_hlog(result: BenchResult, path: str | os.PathLike) -> int:
    """All intervals of all rates into one .hlog, tagged ``rate_<r>`` (``rate_max`` for unpaced)."""
    intervals = []
    offset = 0.0
    for r in result.results:
        tag = f"rate_{r.target_rate or 'max'}"
        ivs = r.intervals or []
        if not ivs:
            intervals.append((tag, offset, r.elapsed_ns / 1e9, r.hist))
        for iv in ivs:
            intervals.append((tag, offset + iv.start_s, iv.length_s, iv.hist))
        offset += max(r.elapsed_ns / 1e9, sum(iv.length_s for iv in ivs))
    return write_hlog(path, intervals, result.start_unix, comment=f"hean bench {result.name}")


def parse_rates(text: str) -> list[int]:
    """``"10k,100k,1M,max"`` -> [10000, 100000, 1000000, 0]; a clear error naming the bad item."""
    out = []
    for item in text.split(","):
        s = item.strip().lower()
        if s in ("max", "0", "unpaced"):
            out.append(0)
            continue
        mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
        try:
            value = float(s[:-1] if mult > 1 else s) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"--rates: {item!r} is not a rate (e.g. 10k, 1M, max)") from None
        if value <= 0 or value > 1e9:
            raise argparse.ArgumentTypeError(f"--rates: {item!r} must be in (0, 1e9] or 'max'")
        out.append(int(value))
    return out


def add_harness_args(p: argparse.ArgumentParser, rates: Sequence[int] = DEFAULT_RATES) -> None:
    """The options every latency benchmark target takes."""
    default = ",".join("max" if r == 0 else str(r) for r in rates)
    p.add_argument("--rates", type=parse_rates, default=list(rates), help=f"msgs/s list (default {default})")
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds per rate (default 1)")
    p.add_argument("--warmup", type=float, default=0.2, help="warm-up seconds per rate, discarded")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': to stdout, the text to stderr)")
    p.add_argument("--hlog", metavar="FILE", help="write an HdrHistogram interval log (.hlog)")
    p.add_argument("--plot", metavar="FILE.png", help="write a percentile plot (needs matplotlib)")
    p.add_argument("--histogram", action="store_true", help="print a text histogram per rate")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")


def emit(result: BenchResult, args: argparse.Namespace, out=None) -> int:
    """Print the table (and histograms), write --json/--hlog/--plot; returns an exit status. With
    ``--json -`` the JSON alone goes to stdout and the text to stderr (unless ``out`` says where)."""
    out = out or text_out(getattr(args, "json", None))
    if getattr(args, "markdown", False):
        print(f"\n**{result.name}** (latency from scheduled send, ns)\n\n{markdown_table(result)}", file=out)
    else:
        print(format_table(result), file=out)
    if getattr(args, "histogram", False):
        for r in result.results:
            print(text_histogram(r.hist, title=f"\n{result.name} at {fmt_rate(r.target_rate)}:"), file=out)
    if getattr(args, "json", None):
        emit_json(args.json, result.as_dict())
        if args.json != "-":
            print(f"wrote {args.json}", file=out)
    if getattr(args, "hlog", None):
        n = write_bench_hlog(result, args.hlog)
        print(f"wrote {args.hlog} ({n} intervals)", file=out)
    if getattr(args, "plot", None):
        try:
            plot_png(result, args.plot)
        except RuntimeError as e:
            print(f"hean bench: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.plot}", file=out)
    return 0
