"""Per-job report: PNG figures and one self-contained HTML page.

Figures (DESIGN.md; issue 5):
* `weights-<cell>.png`: organisation vs decision-maker weights with intervals;
* `alignment_vs_accuracy.png`: alignment (the cross-fitted cosine) against
  accuracy across cells, with the cross-cell correlation, its p-value and
  bootstrap interval;
* `alignment_by_condition.png`: alignment per condition for each model, and
  its change from baseline with a paired interval (every cell of a job shares
  the organisation's side of the comparison, so changes are paired).
The HTML page holds them with the summary table, the protected-attribute
tables and the warnings (one-answer decision-makers among them).
"""

from __future__ import annotations

import html
from pathlib import Path

import jax
import numpy as np
import pandas as pd

import kernels
from engine.audit import PAIR_COLUMNS, ConditionChange
from engine.datasets import IMPORTED
from engine.outputs._tracking import slug


def plot_weights(table: pd.DataFrame, title: str, path: Path, top: int = 25) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "status" in table:  # absent levels and constant columns: nothing measured to draw
        table = table[table["status"] == ""]
    soft = table.get("beta_soft", pd.Series(np.nan, index=table.index))
    t = table.assign(size=np.fmax(np.fmax(table["beta_org"].abs(), table["beta_dm"].abs()),
                                  soft.abs()))
    t = t.sort_values("size", ascending=False).head(top).iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(t) + 1.5))
    series = [("beta_org", "#1f77b4", 0.2, "organisation"),
              ("beta_dm", "#d62728", 0.0, "decision-maker")]
    if np.isfinite(soft).any():  # the soft policy, from the decision-maker's probabilities
        series.append(("beta_soft", "#ff9896", -0.2, "decision-maker, soft"))
    for col, color, off, name in series:
        if not np.isfinite(t[col]).any():
            continue  # a policy of norm ~0: no weights to draw
        err = np.vstack([t[col] - t[f"{col}_low"], t[f"{col}_high"] - t[col]]).clip(min=0)
        ax.errorbar(t[col], y + off, xerr=err, fmt="o", ms=4, color=color, label=name, capsize=2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([lbl[:55] for lbl in t["label"]], fontsize=7)
    ax.set_xlabel("weight on the standardised cue (beta), with interval")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_alignment_vs_accuracy(cells, corr, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for c in cells:
        r = c.comparison.r_cos_cf
        if not np.isfinite(r):
            continue
        lo, hi = c.comparison.r_cos_cf_ci
        xerr = [[max(r - lo, 0)], [max(hi - r, 0)]] if np.isfinite(lo) else None
        ax.errorbar(r, c.comparison.accuracy, xerr=xerr, fmt="o", capsize=2)
        ax.annotate(f"{c.model.split(':')[-1]}\n{c.condition}", (r, c.comparison.accuracy),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("process alignment: cross-fitted cosine (with interval)")
    ax.set_ylabel("accuracy against the organisation")
    if np.isfinite(corr.r):
        ax.set_title(f"across {corr.n_cells} cells: r = {corr.r:+.2f} "
                     f"[{corr.ci.low:+.2f}, {corr.ci.high:+.2f}], p = {corr.p_value:.3f}",
                     fontsize=9)
    else:
        ax.set_title(f"{corr.n_cells} cell(s) with a defined alignment: too few for a "
                     "correlation",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _with_error(comparisons) -> tuple[list, np.ndarray]:
    """r_cos_cf of each comparison (None: NaN) and its interval as error bars `[2, k]`."""
    nan = float("nan")
    ys = [c.r_cos_cf if c else nan for c in comparisons]
    lo = [c.r_cos_cf_ci.low if c else nan for c in comparisons]
    hi = [c.r_cos_cf_ci.high if c else nan for c in comparisons]
    return ys, np.nan_to_num(np.vstack([np.subtract(ys, lo), np.subtract(hi, ys)])).clip(min=0)


def plot_condition_changes(cells, changes: list[ConditionChange], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    models = sorted({c.model for c in cells if c.condition != IMPORTED})
    for m in models:
        mc = [c for c in cells if c.model == m]
        xs = [c.condition for c in mc]
        line = ax1.errorbar(xs, *_with_error([c.comparison for c in mc]), fmt="o-", capsize=3,
                            label=m.split(":")[-1])
        if any(c.soft is not None for c in mc):
            ax1.errorbar(xs, *_with_error([c.soft for c in mc]), fmt="s--", mfc="none",
                         capsize=3, color=line[0].get_color(), label=f"{m.split(':')[-1]} (soft)")
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set_ylabel("alignment (cross-fitted cosine)")
    ax1.set_title("alignment per condition", fontsize=9)
    if models:
        ax1.legend(fontsize=7)
    for i, ch in enumerate(changes):
        ax2.errorbar([ch.delta], [i], xerr=[[max(ch.delta - ch.low, 0)], [max(ch.high - ch.delta, 0)]],
                     fmt="o", capsize=3)
    ax2.set_yticks(range(len(changes)))
    ax2.set_yticklabels([f"{c.model.split(':')[-1]}: {c.condition}" for c in changes], fontsize=7)
    ax2.axvline(0, color="grey", lw=0.8)
    ax2.set_xlabel("change in alignment from baseline (paired interval)")
    ax2.set_title("change in alignment (cross-fitted cosine)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_twins(cells, path: Path) -> Path:
    """Per cue: each cell's share of decisions that flip on its twins, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(c, r) for c in cells for r in c.twins[c.twins["level"] == ""].itertuples()]
    cues = list(dict.fromkeys(r.cue for _, r in rows))
    labels = list(dict.fromkeys(f"{c.model} x {c.condition}" for c, _ in rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * len(cues) * len(labels)))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        mine = {r.cue: r for c, r in rows if f"{c.model} x {c.condition}" == label}
        ys = [i + k * width for i, cue in enumerate(cues) if cue in mine]
        rs = [mine[cue] for cue in cues if cue in mine]
        ax.errorbar([r.flip for r in rs], ys, fmt="o", capsize=3, label=label,
                    xerr=[[max(r.flip - r.flip_low, 0) for r in rs],
                          [max(r.flip_high - r.flip, 0) for r in rs]])
    ax.set_yticks([i + 0.4 - width / 2 for i in range(len(cues))])
    ax.set_yticklabels(cues, fontsize=8)
    ax.set_xlabel("share of decisions that flip when only this cue changes")
    ax.axvline(0, color="grey", lw=0.8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stated(cell, path: Path) -> Path:
    """One cell's cues: how much its decisions weigh each (x) against how often
    its reasons cite it (y); protected cues in red, findings ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = cell.stated.table
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = np.where(t["protected"], "#b3261e", "#1f5fa8")
    ax.scatter(t["weight"], t["mention_rate"], c=colours, s=28)
    flagged = t["finding"] != ""
    ax.scatter(t.loc[flagged, "weight"], t.loc[flagged, "mention_rate"], s=140,
               facecolors="none", edgecolors="#e08a00", linewidths=1.5)
    for r in t.itertuples():
        ax.annotate(r.phrase[:28], (r.weight, r.mention_rate), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    s = cell.stated
    rho = "undefined" if not np.isfinite(s.spearman) else f"{s.spearman:+.2f}"
    ci = "" if not np.isfinite(s.low) else f" [{s.low:+.2f}, {s.high:+.2f}]"
    ax.set_title(f"{cell.model} x {cell.condition}: Spearman {rho}{ci} over "
                 f"{s.n_reasons} reasons", fontsize=9)
    ax.set_xlabel("weight in the decisions (largest |beta| of the cue's columns)")
    ax.set_ylabel("share of reasons that cite the cue")
    ax.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stated_section(cells, out_dir: Path, files: list[Path]) -> list[str]:
    """Stated versus used: a plot and a table per cell with reasons."""
    mine = [c for c in cells if getattr(c, "stated", None) is not None]
    if not mine:
        return []
    parts = ["<h2>Stated versus used</h2>",
             "<p>For each cue, how often the decision-maker's reasons cite it (by the cue's "
             "own words: README, \"Stated versus used\") against how much its decisions "
             "weigh it. <i>used, never cited</i>: an interval of one of its weights excludes "
             "0 and under 5% of reasons cite it; <i>cited, not used</i>: over 25% cite it and "
             "every interval contains 0. Protected cues are in red.</p>"]
    for c in mine:
        png = out_dir / f"stated-{slug(c.model)}-{c.condition}.png"
        files.append(plot_stated(c, png))
        parts.append(f"<h3>{html.escape(c.model)} x {html.escape(c.condition)}</h3>"
                     f"<img src='{png.name}' alt='stated versus used'>")
        parts.append(table_html(c.stated.table))
    return parts


def plot_pairs(labels: list[str], pairs: pd.DataFrame, path: Path) -> Path:
    """Heat map of the cross-fitted cosine between every two decision-makers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    m = np.full((k, k), np.nan)
    np.fill_diagonal(m, 1.0)
    at = {lbl: i for i, lbl in enumerate(labels)}
    for r in pairs.itertuples():
        m[at[r.a], at[r.b]] = m[at[r.b], at[r.a]] = r.r_cos_cf
    fig, ax = plt.subplots(figsize=(4 + 0.8 * k, 2.5 + 0.7 * k))
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu")
    for i in range(k):
        for j in range(k):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(m[i, j]) > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_title("alignment between decision-makers (cross-fitted cosine)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table_html(df: pd.DataFrame, na_rep: str = "undefined", fmt: str = ".3f") -> str:
    """A table of a report page (`fmt`: how numbers are written, "+.3f" for changes)."""
    return df.to_html(index=False, float_format=lambda v: format(v, fmt), na_rep=na_rep,
                      border=0, classes="t")


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table.t{border-collapse:collapse;font-size:12px}"
          "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
          ".warn{background:#fff3cd;padding:6px 10px;margin:4px 0}")


def write_page(out_dir: Path, job_name: str, body: list[str], kind: str = "report") -> Path:
    """report.html: the page head and title around `body`'s HTML parts (`kind`:
    what the page reports, "report" for an audit, "alignment" for ALIGN's)."""
    name = html.escape(job_name)
    page = out_dir / "report.html"
    page.write_text("\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lensaudit: {name}</title><style>{_STYLE}</style></head><body>",
        f"<h1>lensaudit {kind}: {name}</h1>", *body, "</body></html>"]), encoding="utf-8")
    return page


def _twins_section(cells, out_dir: Path, files: list[Path]) -> list[str]:
    """The counterfactual twins' plot and tables (cells or peers with `twins`)."""
    twin_cells = [c for c in cells if c.twins is not None]
    if not twin_cells:
        return []
    files.append(plot_twins(twin_cells, out_dir / "counterfactual_twins.png"))
    parts = ["<h2>Counterfactual twins</h2>",
             "<p>Each case decided again with only one cue changed (every other level; "
             "a numeric cue's 10th and 90th percentiles). <i>flip</i>: share of decisions "
             "that change; <i>p_change</i>: mean change in the probability of the positive "
             "answer; intervals from case resamples that keep a case with its twins. "
             "Rows with a level are the twins set to that level.</p>",
             "<img src='counterfactual_twins.png' alt='counterfactual twins'>"]
    for c in twin_cells:
        parts.append(f"<h3>{html.escape(c.model)} x {html.escape(c.condition)}</h3>")
        parts.append(table_html(c.twins, na_rep="-"))
    return parts


def write_peer_report(out_dir: Path, *, job_name: str, peers, summary: pd.DataFrame,
                      pairs: pd.DataFrame, level: float = 0.95) -> list[Path]:
    """The report of an audit without a reference: each decision-maker's policy,
    and every two compared."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [plot_pairs([p.label for p in peers], pairs, out_dir / "alignment_pairs.png")]
    parts = ["<p>The case set has no reference decisions: each decision-maker's policy is "
             f"reported with {level:.0%} intervals, and every two are compared by the "
             "cross-fitted cosine of their policies.</p>",
             "<h2>Decision-makers</h2>", table_html(summary, na_rep="-"),
             "<h2>Alignment between decision-makers</h2>",
             "<img src='alignment_pairs.png' alt='alignment between decision-makers'>",
             table_html(pairs[PAIR_COLUMNS], na_rep="undefined"),
             "<p>Every figure of each pair (a cell's, with the first in the organisation's "
             "place): <code>pairs.csv</code>.</p>"]
    parts += _twins_section(peers, out_dir, files)
    parts.append("<h2>Weights</h2>")
    for p in peers:
        png = out_dir / f"weights-{slug(p.model)}-{p.condition}.png"
        plot_weights(p.policy, f"{p.label} (n = {len(p.dm.y)})", png)
        files.append(png)
        parts.append(f"<h3>{html.escape(p.label)}</h3><img src='{png.name}' alt='weights'>")
    files.append(write_page(out_dir, job_name, parts))
    return files


def write_report(out_dir: Path, *, job_name: str, audit) -> list[Path]:
    """Write the PNGs and report.html of an `engine.audit.AuditResult` into
    `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    org, cells, level, changes = audit.org, audit.cells, audit.level, audit.changes
    llm_cells = [c for c in cells if c.condition != IMPORTED]  # the prompted ones
    corr = kernels.cross_cell_correlation(
        [c.comparison.r_cos_cf for c in cells], [c.comparison.accuracy for c in cells],
        key=jax.random.PRNGKey(audit.seed), level=level)
    files.append(plot_alignment_vs_accuracy(cells, corr, out_dir / "alignment_vs_accuracy.png"))
    files.append(plot_condition_changes(llm_cells, changes, out_dir / "alignment_by_condition.png"))
    weight_pngs = []
    for c in cells:
        png = out_dir / f"weights-{slug(c.model)}-{c.condition}.png"
        plot_weights(audit.policy_tables[(c.model, c.condition)],
                     f"{c.model} x {c.condition}: organisation vs decision-maker "
                     f"(n = {c.n_cases})", png)
        files.append(png)
        weight_pngs.append((c, png))

    warnings = [w for c in cells for w in c.warnings]
    parts = [
        f"<p>Organisation: cross-validated accuracy {org.cv_accuracy:.3f}, AUC "
        f"{org.cv_auc:.3f} (the normative ceiling).</p>",
    ]
    if warnings:
        parts.append("<h2>Warnings</h2>")
        parts += [f"<div class='warn'>{html.escape(w)}</div>" for w in warnings]
    parts += ["<h2>Cells</h2>", table_html(audit.summary),
              "<h2>Alignment against accuracy</h2>",
              "<img src='alignment_vs_accuracy.png' alt='alignment vs accuracy'>",
              "<h2>Change in alignment per condition</h2>",
              "<img src='alignment_by_condition.png' alt='alignment by condition'>"]
    if changes:
        parts.append(table_html(pd.DataFrame([c.row() for c in changes])))
    parts.append("<h2>Protected attributes</h2>")
    any_protected = False
    for (model, condition), t in audit.protected_tables.items():
        if not t.empty:
            any_protected = True
            parts.append(f"<h3>{html.escape(model)} x {html.escape(condition)}</h3>")
            # Rows of levels no case has carry no numbers; their status says why.
            parts.append(table_html(t.drop(columns=["protected"]), na_rep="-"))
    if not any_protected:
        parts.append("<p>The cue schema marks no protected attribute.</p>")
    parts += _twins_section(cells, out_dir, files)
    parts += _stated_section(cells, out_dir, files)
    parts.append("<h2>Weights</h2>")
    for c, png in weight_pngs:
        parts.append(f"<h3>{html.escape(c.model)} x {html.escape(c.condition)}</h3>"
                     f"<img src='{png.name}' alt='weights'>")
    files.append(write_page(out_dir, job_name, parts))
    return files
