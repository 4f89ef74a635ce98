"""The summary of experiments/head_to_head.py: per row, clean and robust accuracy per seed (Wilson 95 %) and over
seeds (t interval), the attack that broke the most digits; claim C6's paired comparisons; the Markdown table."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Mapping, Optional, Sequence

from _report import machine, mean_cell, pct, per_seed_cell, seed_cell
from _report import on_positions as _on

from deqlib.evaluate import claim_verdict, mcnemar, seed_summary, wilson_interval

ALPHA = 0.05
#: Context beside C6: the DEQ against the explicit network trained the same way.
DEQ_VS_EXPLICIT = {"deq-standard": "explicit-standard", "deq-pgdat": "explicit-pgdat", "deq-trades": "explicit-trades"}


def _decider(broken_by: Optional[Sequence[Any]]) -> Optional[str]:
    """The attack that was first to break the most digits (None where the source kept no per-attack record)."""
    if broken_by is None:
        return None
    counts = Counter(b for b in broken_by if b not in (None, "clean"))
    return counts.most_common(1)[0][0] if counts else None


def seed_row(run: Mapping[str, Any], eps: Sequence[float]) -> Dict[str, Any]:
    """One (row, seed): n, clean accuracy, and per radius the robust accuracy, its Wilson interval, the decider."""
    n = len(run["positions"])
    out: Dict[str, Any] = {"n": n, "clean": sum(map(bool, run["clean_correct"])) / n, "eps": {}}
    for e in map(str, eps):
        k = sum(map(bool, run["eps"][e]["robust"]))
        out["eps"][e] = {
            "robust": k / n,
            "ci95": list(wilson_interval(k, n)),
            "decided_by": _decider(run["eps"][e].get("broken_by")),
        }
    return out


def table(runs: Mapping[str, Mapping[int, Any]], rows: Mapping[str, Any], eps: Sequence[float]) -> Dict[str, Any]:
    """Every row: its seeds' :func:`seed_row` and, over the seeds, the clean and robust accuracies' summaries."""
    out: Dict[str, Any] = {}
    for name in rows:
        per = {s: seed_row(r, eps) for s, r in sorted(runs.get(name, {}).items())}
        if not per:
            out[name] = {"seeds": {}, "clean": None, "eps": {}}
            continue
        out[name] = {
            "seeds": per,
            "clean": seed_summary([p["clean"] for p in per.values()]),
            "eps": {e: seed_summary([p["eps"][e]["robust"] for p in per.values()]) for e in map(str, eps)},
        }
    return out


def compare(runs: Mapping[str, Mapping[int, Any]], a: str, b: str, eps: Sequence[float]) -> Dict[str, Any]:
    """Row ``a`` against row ``b`` per radius: McNemar per training seed on ``a``'s digits, t interval over seeds,
    the verdict on "a beats b"."""
    out: Dict[str, Any] = {}
    for e in map(str, eps):
        per = {}
        for seed, ra in sorted(runs.get(a, {}).items()):
            rb = runs.get(b, {}).get(seed)
            if rb is not None:
                per[seed] = mcnemar(ra["eps"][e]["robust"], _on(rb, ra["positions"], rb["eps"][e]["robust"]))
        diffs = [t["difference"] for t in per.values()]
        out[e] = {
            "per_seed": per,
            "over_seeds": seed_summary(diffs) if diffs else None,
            "verdict": claim_verdict(list(per.values()), ALPHA) if per else "not run",
        }
    return out


def summarise(runs, rows, c6, eps) -> Dict[str, Any]:
    """The table, claim C6 (each regulated defence against its AT DEQ and its explicit net) and the context."""
    claims = {
        f"{d} vs {c}": {"defence": d, "control": c, "eps": compare(runs, d, c, eps)}
        for d, controls in c6.items()
        for c in controls
    }
    context = {
        f"{d} vs {c}": {"defence": d, "control": c, "eps": compare(runs, d, c, eps)} for d, c in DEQ_VS_EXPLICIT.items()
    }
    return {"machine": machine(), "table": table(runs, rows, eps), "c6": claims, "deq_vs_explicit": context}


def _range(over: Optional[Mapping[str, Any]]) -> str:
    return "—" if not over else seed_cell(over)


def _radius(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and e < 0.1 else f"{e:g}"


def markdown(summary: Mapping[str, Any], rows: Mapping[str, Any], command: str, eps: Sequence[float]) -> str:
    """The results file: the table (over seeds, with the seeds landed), then C6 and the DEQ-vs-explicit context."""
    m, last = summary["machine"], str(max(eps))
    lines = [
        "# Head to head: every defence under the strongest attacks",
        "",
        f"Made by `{command}` ({m['date']}, {m['cpu']}, torch {m['torch']}). Robust accuracy in %, L-infinity: the "
        "per-sample worst case over the battery and the attacks adapted to each defence (see the script's docstring "
        "for each row's source and attacks). Over seeds: mean ± sd [95 % t interval]; n digits per seed.",
        "",
        "| row | family | seeds | n | clean | "
        + " | ".join(f"eps {_radius(e)}" for e in eps)
        + f" | broke most (eps {_radius(max(eps))}, first seed) |",
        "|---|---|---|---|---|" + "---|" * len(eps) + "---|",
    ]
    for name, row in rows.items():
        t = summary["table"][name]
        seeds = ",".join(map(str, t["seeds"])) or "none yet"
        n = sorted({p["n"] for p in t["seeds"].values()})
        first = next(iter(t["seeds"].values()), None)
        decider = (first or {}).get("eps", {}).get(last, {}).get("decided_by") or "—"
        cells = " | ".join(_range(t["eps"].get(str(e))) for e in eps)
        lines.append(
            f"| {row.label} | {row.family} | {seeds} | {'/'.join(map(str, n)) or '—'} | {_range(t['clean'])} | "
            f"{cells} | {decider} |"
        )
    for title, key in (
        ("Claim C6 (defence minus control, points)", "c6"),
        ("DEQ minus explicit net", "deq_vs_explicit"),
    ):
        lines += ["", f"## {title}; McNemar per seed, t interval over seeds", ""]
        lines += ["| defence | control | eps | per seed | over seeds | verdict |", "|---|---|---|---|---|---|"]
        for c in summary[key].values():
            for e, r in c["eps"].items():
                per = per_seed_cell(r["per_seed"]) or "-"
                lines.append(
                    f"| {c['defence']} | {c['control']} | {_radius(float(e))} | {per} | {mean_cell(r['over_seeds'])} | {r['verdict']} |"
                )
    return "\n".join(lines) + "\n"


__all__ = ["summarise", "markdown", "table", "compare", "seed_row", "pct"]
