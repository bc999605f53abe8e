"""The adaptation benchmark's report: the goals with their verdicts, a Markdown table, one plot per stream."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

MARGIN = 0.01            # mean prequential metric within this of retrain-every-partition
RETRAIN_SHARE = 0.40     # with at most this share of its retrains
MAX_DELAY = 1            # partitions from an abrupt drift to its detection


def goals(result: dict) -> list[tuple[str, bool, str]]:
    """(goal, met, the figures) for one stream."""
    stream, policies = result["stream"], result["policies"]
    loop, every = policies["loop"], policies["every"]
    checks = []
    if stream.drifting:
        mean_loop, mean_every = statistics.fmean(loop["scores"]), statistics.fmean(every["scores"])
        budget = RETRAIN_SHARE * len(every["retrains"])
        checks.append((f"mean within {MARGIN:g} of retrain-every, <= {RETRAIN_SHARE:.0%} of its retrains",
                       mean_loop >= mean_every - MARGIN and len(loop["retrains"]) <= budget,
                       f"{mean_loop:.4f} vs {mean_every:.4f} ({mean_loop - mean_every:+.4f}), "
                       f"{len(loop['retrains'])} retrains vs {len(every['retrains'])} (budget {budget:.1f})"))
    if stream.kind == "abrupt":
        delays = result["delays"]
        checks.append((f"detected <= {MAX_DELAY} partition after every abrupt drift",
                       all(d is not None and d <= MAX_DELAY for d in delays),
                       ", ".join(f"drift at {p}: {'missed' if d is None else d}"
                                 for p, d in zip(stream.drifts, delays, strict=True))))
    if not stream.drifting:
        checks.append(("control: no retrain and no promotion after the first model",
                       not loop["retrains"] and not loop["promotions"],
                       f"retrains at {loop['retrains'] or 'none'}, promotions at {loop['promotions'] or 'none'}"))
    checks.append(("no false promotion", loop["false_promotions"] == 0, f"{loop['false_promotions']} false"))
    return checks


def _count(values) -> str:
    return "—" if values is None else str(len(values))


def table(results: list[dict]) -> str:
    lines = ["| stream | policy | mean | worst | retrains | promotions | rollbacks | false promotions | "
             "detection delay | fit s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        name = result["stream"].name
        for policy, p in result["policies"].items():
            delay = ", ".join("missed" if d is None else str(d) for d in result["delays"]) if policy == "loop" else ""
            seconds = f"{p['fit_seconds']:.1f}" + (f" (loop {p['loop_seconds']:.0f})" if "loop_seconds" in p else "")
            false = "—" if p["false_promotions"] is None else str(p["false_promotions"])
            lines.append(f"| {name} | {policy} | {statistics.fmean(p['scores']):.4f} | {min(p['scores']):.4f} | "
                         f"{_count(p['retrains'])} | {_count(p['promotions'])} | — | {false} | {delay} | {seconds} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stream = result["stream"]
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    styles = {"loop": {"linewidth": 2.4, "color": "black", "zorder": 5}}
    for policy, p in result["policies"].items():
        axes.plot(range(1, stream.partitions), p["scores"], label=policy, **styles.get(policy, {"linewidth": 1.2}))
    loop = result["policies"]["loop"]
    axes.scatter(loop["retrains"], [loop["scores"][t - 1] for t in loop["retrains"]], marker="o", color="black",
                 zorder=6, label="loop retrains")
    if stream.kind == "gradual":
        axes.axvspan(stream.drifts[0], stream.drifts[-1] + 1, color="grey", alpha=0.15, label="gradual drift")
    for drift in stream.drifts if stream.kind == "abrupt" else ():
        axes.axvline(drift, color="grey", linestyle="--", linewidth=1)
    axes.set(title=f"{stream.name} (seed {result['seed']}): prequential accuracy", xlabel="partition",
             ylabel="accuracy of the model serving before the partition's labels")
    axes.yaxis.label.set_size(8)
    axes.legend(fontsize=7, ncol=4, loc="lower left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_results(results: list[dict], out: Path, *, fresh_seeds: bool, seconds: float) -> bool:
    out.mkdir(parents=True, exist_ok=True)
    verdicts = []
    lines = []
    for result in results:
        for goal, met, figures in goals(result):
            verdicts.append(met)
            lines.append(f"{'PASS' if met else 'FAIL'}  {result['stream'].name}: {goal}: {figures}")
        loop = result["policies"]["loop"]
        if loop["mismatches"]:
            lines.append(f"WARN  {result['stream'].name}: the loop's champion differed from the in-process fit of "
                         f"its partition on {loop['mismatches']} partition(s)")
        plot(result, out / f"adaptation-{result['stream'].name}.png")
    text = table(results)
    print(text)
    print("\n".join(lines))
    summary = (f"{sum(verdicts)}/{len(verdicts)} goals met in {seconds / 60:.1f} min "
               f"({'fresh seeds' if fresh_seeds else 'tuning seeds'})")
    print(summary)
    seeds = ", ".join(f"{r['stream'].name} {r['seed']}" for r in results)
    (out / "adaptation.md").write_text(
        f"# Adaptation benchmark ({'fresh' if fresh_seeds else 'tuning'} seeds: {seeds})\n\n"
        "Written by `make bench-adaptation` (benchmarks/adaptation/bench.py); rollbacks are a canary's, and this "
        "benchmark deploys to no server, so there are none.\n\n"
        f"{text}\n\n## Goals\n\n" + "\n".join(f"- {line}" for line in lines) + f"\n\n{summary}\n")
    print(f"results in {out}", file=sys.stderr)
    return all(verdicts)
