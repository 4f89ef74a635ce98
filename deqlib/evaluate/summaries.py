"""Summaries of robustness results for tables and figures: counts, rows, paired comparisons.

- :func:`broken_by_counts` — how many samples each attack broke first (from a battery radius or a worst case's
  ``broken_by`` list), in the battery's order;
- :func:`masking_rows` — one row per gradient-masking check of :func:`~deqlib.evaluate.masking_checks`: its verdict
  and the numbers behind it, in words;
- :func:`paired_rows` — robust accuracies of several attacks on the same samples, each with its Wilson interval and
  the exact McNemar test against a reference attack;
- :func:`reading_rows`, :func:`verdict_rows` — chapter 6's recorded LyaDEQ readings
  (``experiments/lyadeq_readings.py``): one row per model run, and one per reading, radius and claim with the
  paired test against its control and the verdict.

Every function returns plain lists and dicts (a notebook turns them into a ``pandas.DataFrame``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .statistics import mcnemar, wilson_interval

__all__ = ["broken_by_counts", "masking_rows", "paired_rows", "reading_rows", "verdict_rows"]


def broken_by_counts(
    broken_by: Sequence[Optional[str]], order: Optional[Sequence[str]] = None, *, robust: bool = True
) -> Dict[str, int]:
    """Samples per attack that broke them first (``"clean"``: misclassified without attack; ``"robust"``: none did).

    Args:
        broken_by: one entry per sample (None for a robust sample), as in a battery radius's ``broken_by``.
        order: the attacks in the order to list them (e.g. the radius's ``attacks``); attacks that broke
            nothing are listed with 0. Names not in ``order`` follow, sorted.
        robust: include the ``"robust"`` count.

    Example:
        >>> broken_by_counts(["clean", None, "apgd_ce", "apgd_ce", "square"], ["apgd_ce", "apgd_t", "square"])
        {'clean': 1, 'apgd_ce': 2, 'apgd_t': 0, 'square': 1, 'robust': 1}
    """
    if isinstance(broken_by, (str, bytes)) or not hasattr(broken_by, "__iter__"):
        raise TypeError(f"broken_by_counts: broken_by must be a sequence of names or None, got {broken_by!r}")
    counts: Dict[str, int] = {}
    for name in broken_by:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"broken_by_counts: each entry must be an attack name or None, got {name!r}")
        key = "robust" if name is None else name
        counts[key] = counts.get(key, 0) + 1
    names = ["clean", *(order or [])]
    names += sorted(k for k in counts if k not in names and k != "robust")
    out = {k: counts.get(k, 0) for k in names}
    if robust:
        out["robust"] = counts.get("robust", 0)
    return out


def _verdict(passed: Any) -> str:
    return "does not apply" if passed is None else ("pass" if passed else "FAIL")


def _evidence(c: Mapping[str, Any]) -> str:
    """The numbers behind one check's verdict, in a few words."""
    name = c["name"]
    if name == "monotone_in_eps":
        acc = ", ".join(f"{a:.2f}" for a in c["accuracy"])
        return f"PGD accuracy along eps {acc}; largest gain over noise {c['max_gain_over_noise']:.2f}"
    if name == "large_eps":
        return f"accuracy {c['accuracy']:.2f} at eps {c['eps']:g} (needs <= {c['max_accuracy']:.2f})"
    if name == "steps_and_restarts":
        few, many = c["steps"]
        return (
            f"{few} / {many} steps: {c['accuracy_steps'][0]:.2f} / {c['accuracy_steps'][1]:.2f}; loss "
            f"{c['loss_steps'][0]:.2f} vs random start {c['loss_random_start']:.2f}; restarts gain {c['restart_gain']:.2f}"
        )
    if name == "black_box":
        return f"Square {c['accuracy_square']:.2f} vs white-box {c['accuracy_white_box']:.2f}"
    if name == "gradient_choices":
        if c.get("passed") is None:
            return str(c.get("skipped", "no DEQ layer"))
        gaps = ", ".join(f"{g} {v:.2f}" for g, v in c["gaps"].items())
        return f"gap to the strongest attack: {gaps}"
    if name == "determinism_and_gradients":
        uphill = min(g["uphill_fraction"] for g in c["gradients"].values())
        zero = max(g["n_zero"] for g in c["gradients"].values())
        return (
            f"logits differ by {c['max_logit_difference']:.1g}; one grey level uphill raises the margin of "
            f"{uphill:.2f} of the samples (worst gradient); {zero} zero gradients"
        )
    return ""  # pragma: no cover - every check of MASKING_CHECKS is listed above


def masking_rows(result: Mapping[str, Any]) -> List[Dict[str, str]]:
    """One row per check of a :func:`~deqlib.evaluate.masking_checks` result: ``check``, ``verdict``, ``evidence``.

    Raises:
        TypeError: ``result`` is not a masking_checks result (no ``checks`` entry).
    """
    if not isinstance(result, Mapping) or not isinstance(result.get("checks"), Mapping):
        raise TypeError("masking_rows: give the dict that deqlib.evaluate.masking_checks returned")
    return [
        {"check": name, "verdict": _verdict(c["passed"]), "evidence": _evidence(c)}
        for name, c in result["checks"].items()
    ]


def _bool_mask(mask: Any, name: str, where: str) -> np.ndarray:
    """A 1-D bool array from a bool tensor, array or list (McNemar checks the rest)."""
    arr = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype != np.bool_:
        raise ValueError(f"{where}: {name} must be a non-empty 1-D mask of booleans, got {arr.dtype} {arr.shape}")
    return arr


def paired_rows(masks: Mapping[str, Any], reference: str) -> List[Dict[str, Any]]:
    """Robust accuracy of each attack, with its Wilson 95 % interval and McNemar's test against ``reference``.

    Args:
        masks: attack name -> per-sample robust mask (True: the sample survived), all on the same samples.
        reference: the name of the attack every other one is compared with.

    Returns:
        One dict per attack, in the given order: ``attack``, ``robust_accuracy``, ``ci95``, and, except for the
        reference, ``only_reference_broke`` (samples this attack left robust and the reference broke),
        ``only_this_broke`` and ``p_value`` (exact McNemar, two-sided).

    Example:
        >>> rows = paired_rows({"pgd": [True, True, False, True], "apgd": [True, False, False, False]}, "apgd")
        >>> rows[0]["robust_accuracy"], rows[0]["only_reference_broke"], rows[0]["only_this_broke"]
        (0.75, 2, 0)
    """
    where = "paired_rows"
    if not isinstance(masks, Mapping) or not masks:
        raise TypeError(f"{where}: masks must be a non-empty dict of attack name -> per-sample mask")
    if reference not in masks:
        raise ValueError(f"{where}: the reference {reference!r} is not among the attacks {list(masks)}")
    ref = _bool_mask(masks[reference], reference, where)
    rows = []
    for name, m in masks.items():
        mask = _bool_mask(m, name, where)
        k, n = int(mask.sum()), int(mask.size)
        row: Dict[str, Any] = {"attack": name, "robust_accuracy": k / n, "ci95": list(wilson_interval(k, n))}
        if name != reference:
            t = mcnemar(mask, ref)
            row.update(only_reference_broke=t["a_only"], only_this_broke=t["b_only"], p_value=t["p_value"])
        rows.append(row)
    return rows


def reading_rows(runs: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per recorded (model, seed, n) run of ``experiments/lyadeq_readings.py``: clean and robust accuracy
    with Wilson intervals (in %), the masking checklist's verdict and the measurements of what the reading changes.
    """
    rows = []
    for key in sorted(runs):
        run = runs[key]
        rep, m = run["report"], run["measures"]
        row: Dict[str, Any] = {"model": run["name"].replace("mnist5k-mlp-", ""), "seed": run["seed"], "n": run["n"]}
        row["clean (%)"] = round(100 * rep["clean_accuracy"], 1)
        for eps, r in rep["eps"].items():
            lo, hi = r["ci95"]
            row[f"eps {eps} (%)"] = f"{100 * r['robust_accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        row["masking"] = "passed" if run["masking"]["passed"] else "failed: " + ", ".join(run["masking"]["failed"])
        row["input -> state"] = round(m["input"]["state_ratio"], 3)
        row["initial state -> state"] = round(m["initial_state"]["ratio"], 3)
        rows.append(row)
    return rows


def verdict_rows(summary: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per reading and radius: its claim, the paired difference to its control per seed (points, McNemar
    p), the mean over seeds with its t interval (points; "-" with fewer than two seeds) and the verdict (the
    ``summary`` of ``experiments/lyadeq_readings.py``)."""
    rows = []
    for name, s in summary.items():
        for eps, e in s["eps"].items():
            per = e["per_seed"]
            rows.append(
                {
                    "reading": name.replace("mnist5k-mlp-", ""),
                    "claim": s["claim"].split(":")[0],
                    "eps": eps,
                    "n": s["n"],
                    "seeds": len(per),
                    "reading - control (points)": ", ".join(
                        f"{100 * v['difference']:+.1f} (p {v['p_value']:.2g})" for v in per.values()
                    ),
                    "mean over seeds [95 % t]": _over_seeds(e.get("over_seeds")),
                    "verdict": e["verdict"],
                }
            )
    return rows


def _over_seeds(over: Optional[Mapping[str, Any]]) -> str:
    if not over or over.get("interval") is None:
        return "-"
    lo, hi = over["interval"]
    return f"{100 * over['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
