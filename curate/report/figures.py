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


SOURCE_COLORS = [c for c in PALETTE if c != "#7f7f7f"]  # grey is for the rest
OTHER_COLOR = "#b0b0b0"


def source_groups(sources: list[str]) -> tuple[np.ndarray, list[str], list[int], list[str]]:
    """Each point's colour group by source: every source when they fit the palette, else
    the most frequent ones and one group of the rest (last, in grey). Returns (codes,
    group names, counts, colours); ties in count break by name."""
    labels = [str(s) for s in sources]
    names, counts = np.unique(np.array(labels, dtype=object), return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
    top = order if len(order) <= len(SOURCE_COLORS) else order[:len(SOURCE_COLORS) - 1]
    code_of = {names[i]: k for k, i in enumerate(top)}
    codes = np.array([code_of.get(s, len(top)) for s in labels], int)
    groups = [str(names[i]) for i in top]
    colors = SOURCE_COLORS[:len(top)]
    if len(top) < len(order):
        groups.append(f"{len(order) - len(top)} other sources")
        colors.append(OTHER_COLOR)
    return codes, groups, [int((codes == k).sum()) for k in range(len(groups))], colors


def embedding_map(xy: np.ndarray, clusters: np.ndarray | None,
                  selections: dict[str, np.ndarray],
                  by_source: tuple[np.ndarray, list[str], list[str]] | None = None) -> str:
    """Scatter of one 2-D projection: a panel coloured by cluster, one by source (when
    `by_source` = (codes, group names, colours) is given) beside it, then one per selection
    (selected on top in colour, the rest in grey)."""
    panels = 1 + (by_source is not None) + len(selections)
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
    rest = axes[1:]
    if by_source is not None:
        ax, rest = axes[1], axes[2:]
        codes, groups, colors = by_source
        rest_group = colors[-1] == OTHER_COLOR
        # the rest at the bottom, then largest first so that small sources stay visible
        order = [len(groups) - 1, *range(len(groups) - 1)] if rest_group else range(len(groups))
        handles = {}
        for k in order:
            mask = codes == k
            label = groups[k] if len(groups[k]) <= 28 else groups[k][:27] + "…"
            handles[k] = ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colors[k],
                                    linewidths=0, label=f"{label} ({int(mask.sum()):,})")
        ax.set_title(f"by source (top {len(groups) - 1} and the rest)" if rest_group
                     else "by source", fontsize=10)
        ax.legend(handles=[handles[k] for k in range(len(groups))], fontsize=7, markerscale=2,
                  loc="best", framealpha=0.8)
    for ax, (name, chosen) in zip(rest, selections.items()):
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


def source_mix_svg(rows: list[dict], limit: int = 12) -> str:
    """Inline SVG of paired bars per source: share of the pool (grey) and of the
    selection (blue), in the order of `rows` (dicts with source, pool_share, share)."""
    shown = rows[:limit]
    label_w, bar_w, row_h, pad_t = 150, 230, 22, 18
    w, h = label_w + bar_w + 60, pad_t + row_h * len(shown) + 4
    top = max([r["pool_share"] for r in shown] + [r["share"] for r in shown] + [1e-9])
    parts = [f"<svg class='mix' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
             "aria-label='share of the pool and of the selection per source'>",
             f"<rect x='{label_w}' y='3' width='10' height='8' fill='#b0b0b0'/>"
             f"<text x='{label_w + 14}' y='11' font-size='10'>pool</text>"
             f"<rect x='{label_w + 50}' y='3' width='10' height='8' fill='{PALETTE[0]}'/>"
             f"<text x='{label_w + 64}' y='11' font-size='10'>selection</text>"]
    for i, r in enumerate(shown):
        y = pad_t + i * row_h
        name = r["source"] if len(r["source"]) <= 24 else r["source"][:23] + "…"
        parts.append(f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end' font-size='10'>"
                     f"{html.escape(name)}</text>")
        for j, (key, color, what) in enumerate((("pool_share", "#b0b0b0", "pool"),
                                                ("share", PALETTE[0], "selection"))):
            v = r[key]
            parts.append(f"<rect x='{label_w}' y='{y + 2 + 9 * j}' "
                         f"width='{max(bar_w * v / top, 0.5 if v else 0):.1f}' height='8' "
                         f"fill='{color}'><title>{html.escape(r['source'])}: {100 * v:.1f}% of "
                         f"the {what}</title></rect>")
        parts.append(f"<text x='{label_w + bar_w + 4}' y='{y + 13}' font-size='9'>"
                     f"{100 * r['pool_share']:.1f}% → {100 * r['share']:.1f}%</text>")
    return "".join(parts) + "</svg>"


def leaderboard(board: dict) -> str:
    """Mean target NLL per arm with error bars of one standard deviation over the seeds,
    each seed's run as a dot, the base model as a dashed line; best arm on top."""
    arms = list(board["arms"])[::-1]
    names = [a["selection"] for a in arms]
    means = np.array([a["nll_mean"] for a in arms], float)
    stds = np.array([a.get("nll_std") or 0.0 for a in arms], float)
    fig = _figure(7, 0.42 * len(arms) + 1.5)
    ax = fig.subplots()
    y = np.arange(len(arms))
    colors = [PALETTE[3] if n == board.get("baseline") else PALETTE[0] for n in names]
    for i, a in enumerate(arms):
        seeds = [r["nll"] for r in a.get("runs") or [] if r.get("nll") is not None]
        ax.scatter(seeds, [i] * len(seeds), s=14, color=colors[i], alpha=0.35, linewidths=0,
                   zorder=2)
    for i in range(len(arms)):
        ax.errorbar(means[i], i, xerr=stds[i], fmt="none", ecolor=colors[i], elinewidth=1.5,
                    capsize=4, zorder=3)
    ax.scatter(means, y, s=36, color=colors, zorder=4)
    base = (board.get("base") or {}).get("nll")
    if base is not None:
        ax.axvline(base, color="gray", linestyle="--", linewidth=1, label="base model")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [n + (" (baseline)" if n == board.get("baseline") else "") for n in names],
                  fontsize=9)
    ax.set_ylim(-0.6, len(arms) - 0.4)
    ax.margins(x=0.06)
    ax.set_xlabel("target NLL per token (lower is better)")
    ax.grid(axis="x", color="#e1e4ea", linewidth=0.6)
    ax.set_axisbelow(True)
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
