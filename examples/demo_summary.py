"""The last lines of `make demo`: what its two jobs showed, from `segq summary JOB --format json`.

Usage: demo_summary.py REPORT_DIR/rows.json REPORT_DIR/rows.json (the sweep's, then the saliency job's;
each written beside that job's report.html)
       demo_summary.py --best-checkpoint ARCH REPORT_DIR/rows.json (the checkpoint of ARCH's best trial)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SAME_WITHIN = 0.01  # val mIoU: closer than this, the two curves are not told apart


def load_rows(path: str) -> list[dict]:
    return json.loads(Path(path).read_text())


def val_miou(row: dict) -> float | None:
    return (row.get("val") or {}).get("miou")


def best_by_arch(rows: list[dict]) -> dict[str, dict]:
    """Each architecture's best trial by val mIoU."""
    best: dict[str, dict] = {}
    for row in rows:
        if val_miou(row) is None:
            continue
        if row["arch"] not in best or val_miou(row) > val_miou(best[row["arch"]]):
            best[row["arch"]] = row
    return best


def describe_sweep(rows: list[dict]) -> list[str]:
    best = best_by_arch(rows)
    if not best:
        return ["sweep: no trial was scored"]
    ranked = sorted(best.values(), key=val_miou, reverse=True)
    winner, runner_up, worst = ranked[0], ranked[min(1, len(ranked) - 1)], ranked[-1]
    lines = [f"sweep: {winner['arch']} won with val mIoU {val_miou(winner):.3f} ({winner['trial']}), "
             f"{val_miou(winner) - val_miou(runner_up):.3f} ahead of {runner_up['arch']} "
             f"and {val_miou(winner) - val_miou(worst):.3f} ahead of {worst['arch']} (the worst)"]
    iou = (winner.get("val") or {}).get("per_class_iou") or {}
    if iou:
        lines.append("  best trial per class: " + ", ".join(f"{name} {value:.2f}" for name, value in iou.items() if value is not None))
    budget = rows[0].get("job_budget") or {}
    if budget.get("planned_trial_epochs"):
        spent, planned = budget["trial_epochs"], budget["planned_trial_epochs"]
        lines.append(f"  budget: {spent} trial-epochs of the full grid's {planned} ({spent / planned:.0%}); "
                     f"the scheduler stopped {budget['stopped_trials']} of {len(rows)} trials early")
    return lines


def saliency_curves(rows: list[dict]) -> dict[str, dict[int, float]]:
    """relevance -> {iteration: val mIoU} (one configuration and its random control)."""
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        relevance = ((row.get("params") or {}).get("saliency") or {}).get("relevance", row["trial"])
        if val_miou(row) is not None:
            curves.setdefault(relevance, {})[row.get("iteration") or 1] = val_miou(row)
    return curves


def describe_saliency(rows: list[dict]) -> list[str]:
    curves = saliency_curves(rows)
    saliency, control = curves.get("softmax_foreground"), curves.get("random")
    if not saliency:
        return ["saliency: no iteration was scored"]
    lines = ["saliency: val mIoU by iteration, " + "; ".join(
        f"{name} " + " ".join(f"{curve[i]:.3f}" for i in sorted(curve))
        for name, curve in (("saliency", saliency), ("random control", control)) if curve)]
    if control:
        shared = sorted(set(saliency) & set(control))[1:]  # iteration 1 trains on the same images
        if shared:
            gap = sum(saliency[i] - control[i] for i in shared) / len(shared)
            verdict = ("keeps more of the model's accuracy than" if gap > SAME_WITHIN else
                       "keeps less of the model's accuracy than" if gap < -SAME_WITHIN else
                       "keeps about as much of the model's accuracy as")
            lines.append(f"  removing the least relevant pixels {verdict} removing random ones "
                         f"(mean gap {gap:+.3f} over iterations {shared[0]}-{shared[-1]})")
    return lines


def best_checkpoint(rows: list[dict], arch: str) -> str:
    """The checkpoint of the architecture's best trial (the saliency job starts from it)."""
    row = best_by_arch(rows).get(arch)
    if row is None or not row.get("best_checkpoint"):
        raise SystemExit(f"error: the sweep has no scored {arch} trial with a checkpoint")
    return row["best_checkpoint"]


def main(sweep_json: str, saliency_json: str) -> None:
    print("\n".join(describe_sweep(load_rows(sweep_json)) + describe_saliency(load_rows(saliency_json))))
    for path in (sweep_json, saliency_json):
        print(f"report: {Path(path).resolve().parent / 'report.html'}")


if __name__ == "__main__":
    if sys.argv[1] == "--best-checkpoint":
        print(best_checkpoint(load_rows(sys.argv[3]), sys.argv[2]))
    else:
        main(*sys.argv[1:3])
