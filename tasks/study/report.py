"""The study's figures from its raw matrices, the claims they support, a table and plots.

``perplexity[arm][seed][after_day][on_day]`` is the raw result. Per arm and seed, after day d (1-based):
- new-day perplexity: on day d's split;
- forgetting of an earlier day j: relative rise of its perplexity from right after day j to after day d,
  averaged over j < d ("average forgetting");
- average perplexity over the days so far (1..d);
and after the last day, the forgetting of each earlier day on its own.
Each figure is reported as mean and spread (sample standard deviation over seeds). A claim ("A better than
B") is made only where the difference of the means exceeds the sum of the two spreads.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from tasks.study.config import sweep_percent

LABELS = {"naive": "(a) naive", "replay": "(b) replay + re-warm", "replay_reg": "(c) (b) + regularizer",
          "replay_drift": "(b) with drift planner", "scratch_all": "(d) scratch on all data"}


def arm_label(arm: str) -> str:
    percent = sweep_percent(arm)
    return LABELS[arm] if percent is None else f"(b) at fixed replay {percent}%"


def _mean_spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "spread": statistics.stdev(values) if len(values) > 1 else 0.0}


def seed_figures(ppl: list[list[float]]) -> dict[str, list[float | None]]:
    """One seed's figures after each day: new-day perplexity, average forgetting, average perplexity so far."""
    days = len(ppl)
    new_day = [ppl[d][d] for d in range(days)]
    forgetting: list[float | None] = [None]
    for d in range(1, days):
        forgetting.append(statistics.fmean((ppl[d][j] - ppl[j][j]) / ppl[j][j] for j in range(d)))
    average = [statistics.fmean(ppl[d][: d + 1]) for d in range(days)]
    return {"new_day_perplexity": new_day, "average_forgetting": forgetting, "average_perplexity": average}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """``{arm: {figure: [ {mean, spread} | None per day ]}}`` and the final-day per-day perplexities."""
    out: dict[str, Any] = {}
    for arm, seeds in raw["perplexity"].items():
        per_seed = [seed_figures(s) for s in seeds]
        figures: dict[str, Any] = {}
        for name in per_seed[0]:
            figures[name] = [None if per_seed[0][name][d] is None
                             else _mean_spread([f[name][d] for f in per_seed]) for d in range(len(seeds[0]))]
        last = len(seeds[0]) - 1
        figures["final_perplexity_per_day"] = [_mean_spread([s[last][j] for s in seeds])
                                               for j in range(len(seeds[0][last]))]
        figures["final_forgetting_per_day"] = [_mean_spread([(s[last][j] - s[j][j]) / s[j][j] for s in seeds])
                                               for j in range(last)]
        figures["seeds"] = len(seeds)
        out[arm] = figures
    return out


def _claim(name: str, a: dict[str, float], b: dict[str, float], holds: bool, detail: str) -> dict[str, Any]:
    beyond = abs(a["mean"] - b["mean"]) > a["spread"] + b["spread"]
    verdict = ("met" if holds else "missed") if beyond else "within the spread (no claim)"
    return {"target": name, "verdict": verdict, "detail": detail}


def _ratio_claim(name: str, a: dict[str, float], b: dict[str, float], limit: float, what: str) -> dict[str, Any]:
    """Whether a / b - 1 <= ``limit``: met where it holds even at the spreads' worst (a high, b low), missed
    where it fails even at their best, no claim in between (a bound, unlike a comparison, can be met by a
    difference smaller than the spread)."""
    gap = a["mean"] / b["mean"] - 1
    best = (a["mean"] - a["spread"]) / (b["mean"] + b["spread"]) - 1
    low = b["mean"] - b["spread"]
    worst = (a["mean"] + a["spread"]) / low - 1 if low > 0 else float("inf")
    verdict = "met" if worst <= limit else "missed" if best > limit else "within the spread (no claim)"
    return {"target": name, "verdict": verdict,
            "detail": f"{what} {gap:+.1%} ({best:+.1%} to {worst:+.1%} with the spreads)"}


def _forgetting_claim(fa: dict[str, float], fb: dict[str, float]) -> dict[str, Any]:
    """(b) vs (a) on average forgetting; a cut is only defined where (a) forgets at all: where earlier days
    improved instead (backward transfer, an under-trained model), the target does not apply and says so."""
    name = "(b) cuts (a)'s average forgetting by >= 50%"
    if fa["mean"] <= 0:
        return {"target": name, "verdict": "not applicable: (a) does not forget",
                "detail": f"earlier days improved under (a) by {-fa['mean']:.0%}, under (b) by {-fb['mean']:.0%}"}
    cut = 1 - fb["mean"] / fa["mean"]
    low = fa["mean"] - fa["spread"]
    worst = 1 - (fb["mean"] + fb["spread"]) / low if low > 0 else float("-inf")
    best = 1 - (fb["mean"] - fb["spread"]) / (fa["mean"] + fa["spread"])
    verdict = "met" if worst >= 0.5 else "missed" if best < 0.5 else "within the spread (no claim)"
    return {"target": name, "verdict": verdict, "detail": f"cut {cut:.0%} ({worst:.0%} to {best:.0%} with the spreads)"}


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets on the last day: (b) vs (a) forgetting and new-day cost, (b) vs (d) per day,
    and whether the drift planner beats the best fixed fraction. With one seed there is no spread: no claim."""
    a, b, d = (summary[k] for k in ("naive", "replay", "scratch_all"))
    fa, fb = a["average_forgetting"][-1], b["average_forgetting"][-1]
    na, nb = a["new_day_perplexity"][-1], b["new_day_perplexity"][-1]
    out = [_forgetting_claim(fa, fb), _ratio_claim("(b) costs <= 5% new-day perplexity against (a)", nb, na, 0.05,
                                                   "cost")]
    for j, (pb, pd) in enumerate(zip(b["final_perplexity_per_day"], d["final_perplexity_per_day"], strict=True)):
        out.append(_ratio_claim(f"(b) within 5% of (d) on day {j + 1}", pb, pd, 0.05, "gap"))
    out.append(_planner_claim(summary))
    if min(fig["seeds"] for fig in summary.values()) < 2:  # no spread to judge against
        out = [claim | {"verdict": "one seed: no claim"} for claim in out]
    return out


def _planner_claim(summary: dict[str, Any]) -> dict[str, Any]:
    """The drift planner against the best fixed fraction: the configured one (arm ``replay``) and the sweep."""
    fixed = [arm for arm in summary if arm == "replay" or sweep_percent(arm) is not None]
    best = min(fixed, key=lambda arm: summary[arm]["average_perplexity"][-1]["mean"])
    bf, pf = summary[best]["average_perplexity"][-1], summary["replay_drift"]["average_perplexity"][-1]
    return _claim("drift planner beats the best fixed fraction (average perplexity)", bf, pf,
                  pf["mean"] < bf["mean"], f"{pf['mean']:.2f} vs {bf['mean']:.2f}, the best of {len(fixed)} fixed "
                  f"arms: {arm_label(best)}")


def _fmt(cell: dict[str, float] | None, pct: bool = False) -> str:
    if cell is None:
        return "-"
    return f"{cell['mean']:+.1%} ± {cell['spread']:.1%}" if pct else f"{cell['mean']:.2f} ± {cell['spread']:.2f}"


def markdown_table(summary: dict[str, Any], claims: list[dict[str, Any]]) -> str:
    """Last-day figures per arm (mean ± spread over seeds), then the targets."""
    lines = ["| arm | new-day perplexity | average forgetting | average perplexity (all days) |",
             "| --- | --- | --- | --- |"]
    for arm, fig in summary.items():
        lines.append(f"| {arm_label(arm)} | {_fmt(fig['new_day_perplexity'][-1])} | "
                     f"{_fmt(fig['average_forgetting'][-1], pct=True)} | {_fmt(fig['average_perplexity'][-1])} |")
    days = len(next(iter(summary.values()))["final_forgetting_per_day"])
    lines += ["", "Forgetting of each earlier day after the last day (relative perplexity change since right after "
              "that day):", "", "| arm | " + " | ".join(f"day {j + 1}" for j in range(days)) + " |",
              "| --- |" + " --- |" * days]
    lines += [f"| {arm_label(arm)} | " + " | ".join(_fmt(c, pct=True) for c in fig["final_forgetting_per_day"]) + " |"
              for arm, fig in summary.items()]
    lines += ["", "| target | verdict | measured |", "| --- | --- | --- |"]
    lines += [f"| {c['target']} | {c['verdict']} | {c['detail']} |" for c in claims]
    return "\n".join(lines) + "\n"


def _forgetting_bars(ax: Any, summary: dict[str, Any]) -> None:
    """Grouped bars: each earlier day's forgetting after the last day, one bar per arm (mean, spread)."""
    width = 0.8 / len(summary)
    for i, (arm, figures) in enumerate(summary.items()):
        cells = figures["final_forgetting_per_day"]
        ax.bar([j + 1 + (i - (len(summary) - 1) / 2) * width for j in range(len(cells))],
               [c["mean"] for c in cells], width, yerr=[c["spread"] for c in cells], capsize=2, label=arm_label(arm))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("forgetting of each earlier day, after the last")
    ax.set_xlabel("earlier day")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Four panels: average forgetting, new-day perplexity and average perplexity so far over the days, and
    each earlier day's forgetting after the last day."""
    panels = (("average_forgetting", "average forgetting (rel.)"), ("new_day_perplexity", "new-day perplexity"),
              ("average_perplexity", "average perplexity, days so far"))
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    _forgetting_bars(axes[3], summary)
    for ax, (name, title) in zip(axes[:3], panels, strict=True):
        for arm, figures in summary.items():
            points = [(d + 1, c["mean"], c["spread"]) for d, c in enumerate(figures[name]) if c is not None]
            days, means, spreads = zip(*points, strict=True)
            ax.errorbar(days, means, yerr=spreads, marker="o", capsize=3, label=arm_label(arm))
        ax.set_title(title)
        ax.set_xlabel("after day")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
