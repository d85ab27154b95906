"""Figures of the report: histograms as inline SVG (cheap, crisp, with tooltips), the
rest as matplotlib PNG data URIs (no pyplot state, no backend switch: a bare `Figure`
renders with Agg)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
MAX_BARS = 30  # sources drawn in the composition plot


def data_uri(fig) -> str:
    """The figure as a `data:image/png;base64,...` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def composition(rows: list[dict], kinds: list[str]) -> str:
    """Horizontal bars per source, stacked by kind: rows, and tokens when known."""
    sources = sorted({r["source"] for r in rows},
                     key=lambda s: -sum(r["rows"] for r in rows if r["source"] == s))[:MAX_BARS]
    has_tokens = any(r.get("tokens") for r in rows)
    fig = _figure(10 if has_tokens else 6, 0.3 * len(sources) + 1.4)
    axes = fig.subplots(1, 2 if has_tokens else 1, sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, ["rows", "tokens"]):
        left = np.zeros(len(sources))
        for i, kind in enumerate(kinds):
            vals = np.array([sum((r.get(metric) or 0) for r in rows
                                 if r["source"] == s and r["kind"] == kind) for s in sources],
                            float)
            ax.barh(sources, vals, left=left, color=PALETTE[i % len(PALETTE)], label=kind)
            left += vals
        ax.set_xlabel(metric)
    axes[0].invert_yaxis()  # largest source on top (the axes share y)
    axes[0].legend(fontsize=8, loc="lower right")
    return data_uri(fig)


def histogram_svg(name: str, v: np.ndarray) -> tuple[str, bool]:
    """An inline SVG histogram of the non-null values `v` (one bar per integer when there
    are few distinct integers, else 30 bins), and whether outliers beyond the 0.1-99.9
    percentiles were left out. Each bar's tooltip gives its range and count."""
    lo, hi = np.quantile(v, [0.001, 0.999]) if len(v) >= 1000 else (v.min(), v.max())
    shown = v[(v >= lo) & (v <= hi)]
    distinct = np.unique(shown)
    integers = len(distinct) <= 20 and bool(np.all(distinct == np.round(distinct)))
    if integers:  # one bar per value, labelled by the values
        edges = np.arange(distinct.min() - 0.5, distinct.max() + 1.5)
        first, last = distinct.min(), distinct.max()
    else:
        edges = np.histogram_bin_edges(shown, bins=30)
        first, last = edges[0], edges[-1]
    counts, edges = np.histogram(shown, bins=edges)
    w, h, pad_l, pad_b, pad_t = 240, 130, 34, 18, 16
    plot_w, plot_h = w - pad_l - 6, h - pad_b - pad_t
    top = max(int(counts.max()), 1)
    bar_w = plot_w / len(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = plot_h * c / top
        bars.append(f"<rect x='{pad_l + i * bar_w:.1f}' y='{pad_t + plot_h - bh:.1f}' "
                    f"width='{max(bar_w - 1, 0.5):.1f}' height='{bh:.1f}' fill='{PALETTE[0]}'>"
                    f"<title>{_num(edges[i])} to {_num(edges[i + 1])}: {int(c):,}</title></rect>")
    clipped = len(shown) < len(v)
    title = html.escape(name) + (" *" if clipped else "")
    svg = (f"<svg class='hist' width='{w}' height='{h}' "
           f"viewBox='0 0 {w} {h}' role='img' aria-label='histogram of {html.escape(name)}'>"
           f"<text x='{w / 2}' y='11' text-anchor='middle' font-size='11'>{title}</text>"
           f"<text x='{pad_l - 3}' y='{pad_t + 8}' text-anchor='end' font-size='9'>{top:,}</text>"
           f"<text x='{pad_l - 3}' y='{pad_t + plot_h}' text-anchor='end' font-size='9'>0</text>"
           + "".join(bars) +
           f"<line x1='{pad_l}' y1='{pad_t + plot_h}' x2='{w - 6}' y2='{pad_t + plot_h}' "
           "stroke='#667085'/>"
           f"<text x='{pad_l}' y='{h - 4}' font-size='9'>{_num(first)}</text>"
           f"<text x='{w - 6}' y='{h - 4}' text-anchor='end' font-size='9'>{_num(last)}"
           "</text></svg>")
    return svg, clipped


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def embedding_map(xy: np.ndarray, clusters: np.ndarray | None,
                  selections: dict[str, np.ndarray]) -> str:
    """Scatter of the 2-D projection: one panel coloured by cluster, one per selection
    (selected on top in colour, the rest in grey)."""
    panels = 1 + len(selections)
    cols = min(2, panels)
    nrows = -(-panels // cols)
    fig = _figure(5.2 * cols, 4.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False).ravel())
    size = 6 if len(xy) > 2000 else 12
    ax = axes[0]
    if clusters is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color=PALETTE[0], linewidths=0)
        ax.set_title("all examples", fontsize=10)
    else:
        colors = np.array(PALETTE)[clusters % len(PALETTE)]
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colors, linewidths=0)
        ax.set_title(f"k-means clusters (k={clusters.max() + 1})", fontsize=10)
    for ax, (name, chosen) in zip(axes[1:], selections.items()):
        ax.scatter(xy[~chosen, 0], xy[~chosen, 1], s=size, color="#cccccc", linewidths=0,
                   label="not selected")
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=size, color=PALETTE[3], linewidths=0,
                   label="selected")
        ax.set_title(f"{name}: {int(chosen.sum())} of {len(chosen)} shown points selected",
                     fontsize=10)
        ax.legend(fontsize=8, markerscale=2, loc="best")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_visible(False)
    return data_uri(fig)


def similarity_histogram(values: dict[str, np.ndarray]) -> str:
    """Similarity of each dropped duplicate to the example kept in its place."""
    fig = _figure(6, 2.4)
    ax = fig.subplots()
    for i, (name, v) in enumerate(values.items()):
        ax.hist(v, bins=30, alpha=0.6, color=PALETTE[i % len(PALETTE)], label=name)
    ax.set_xlabel("similarity to the kept example")
    ax.set_ylabel("dropped")
    ax.legend(fontsize=8)
    return data_uri(fig)
