"""Render ``summary.md`` from the JSON results of ``python -m benchmarks.run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from .common import read_json

NOTES = Path(__file__).resolve().parent / "notes.md"

GOAL_RATIO = 1.0
GOAL_RATIO_256 = 0.8
GOAL_OVERHEAD_256 = 1.15
GOAL_IFT_MEMORY = 1.1


def _ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def _mib(b: float) -> str:
    return f"{b / 2**20:.2f}"


def _ok(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _meta_line(meta: Dict[str, Any]) -> str:
    la0, la1 = meta.get("load_average_start"), meta.get("load_average_end")
    return (
        f"{meta.get('date_utc')}; {meta.get('cpu')} ({meta.get('logical_cpus')} logical CPUs), "
        f"torch {meta.get('torch')} with {meta.get('torch_threads')} thread(s), torchdeq {meta.get('torchdeq')}, "
        f"Python {meta.get('python')}; load average (1, 5, 15 min) at start {la0}, at end {la1}; "
        f"git {meta.get('git')}; {meta.get('duration_s')} s"
    )


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def solvers_section(res: Dict[str, Any]) -> List[str]:
    s = res["settings"]
    lines = [
        "## Solver speed: deqlib against torchdeq",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        f"Same cell, same zero initial state, same f (the injection precomputed), `torch.no_grad()`, "
        f'`stop_mode="rel"`, tol = {s["tol"]:g}, max_iter = {s["max_iter"]}; median of {s["repeats"]} repeats, '
        "deqlib and torchdeq alternating within each repeat. *ratio* = deqlib time / torchdeq time (below 1: deqlib "
        "faster); *ratio per f* divides each time by its number of f evaluations (the per-step cost alone); "
        "*overhead* = solver time / (nfev x time of one f evaluation), 1.0 being the floor. "
        "Reaching the tolerance: deqlib stops each sample once its relative residual ||f(z) - z|| / ||f(z)|| is below tol "
        "(the call returns when all have stopped) and returns each sample's best evaluated iterate; torchdeq stops when "
        "the largest relative residual of the batch at one evaluation is below tol (see `benchmarks/bench_solvers.py`).",
        "",
    ]
    rows = []
    for c in res["cases"]:
        g = c["guard"]
        rows.append(
            [
                c["cell"],
                str(c["batch"]),
                c["solver"],
                f"{_ms(c['deqlib_median_s'])} ({c['deqlib_nfev']})",
                f"{_ms(c['torchdeq_median_s'])} ({c['torchdeq_nfev']})",
                f"**{c['ratio']:.2f}**",
                f"{c['ratio_per_evaluation']:.2f}",
                f"{c['overhead_deqlib']:.2f}",
                f"{c['overhead_torchdeq']:.2f}",
                f"{g['err_deqlib_vs_reference_max']:.1e} / {g['err_torchdeq_vs_reference_max']:.1e}",
            ]
        )
    lines += _table(
        [
            "cell",
            "batch",
            "solver",
            "deqlib ms (nfev)",
            "torchdeq ms (nfev)",
            "ratio",
            "ratio per f",
            "overhead deqlib",
            "overhead torchdeq",
            "error vs reference deqlib / torchdeq",
        ],
        rows,
    )
    bare = [c for c in res["cases"] if "overhead_bare_loop" in c]
    if bare:
        lines += [
            "",
            "The floor of monitoring: a bare loop `fz = f(z); r = ||fz - z|| / ||fz||; stop when max(r) < tol` "
            "(no per-sample state, no best iterate) has this overhead over nfev x t_f, next to deqlib's fixed_point:",
            "",
        ]
        lines += _table(
            [
                "cell",
                "batch",
                "bare loop overhead",
                "deqlib fixed_point overhead",
                "torchdeq fixed_point_iter overhead",
            ],
            [
                [
                    c["cell"],
                    str(c["batch"]),
                    f"{c['overhead_bare_loop']:.2f}",
                    f"{c['overhead_deqlib']:.2f}",
                    f"{c['overhead_torchdeq']:.2f}",
                ]
                for c in bare
            ],
        )
    lines += ["", "Goals:", ""]
    all_ratio = [c for c in res["cases"]]
    bad = [c for c in all_ratio if c["ratio"] > GOAL_RATIO]
    lines.append(
        f"- ratio <= {GOAL_RATIO} everywhere: {_ok(not bad)}"
        + (
            " — above it: " + ", ".join(f"{c['cell']}/{c['batch']}/{c['solver']} {c['ratio']:.2f}" for c in bad)
            if bad
            else ""
        )
    )
    big = [c for c in res["cases"] if c["batch"] == 256 and c["solver"] in ("anderson", "broyden")]
    if big:
        bad = [c for c in big if c["ratio"] > GOAL_RATIO_256]
        lines.append(
            f"- ratio <= {GOAL_RATIO_256} for Anderson and Broyden at batch 256: {_ok(not bad)}"
            + (" — above it: " + ", ".join(f"{c['cell']}/{c['solver']} {c['ratio']:.2f}" for c in bad) if bad else "")
        )
    big = [c for c in res["cases"] if c["batch"] == 256]
    if big:
        bad = [c for c in big if c["overhead_deqlib"] > GOAL_OVERHEAD_256]
        lines.append(
            f"- overhead <= {GOAL_OVERHEAD_256} at batch 256: {_ok(not bad)}"
            + (
                " — above it: " + ", ".join(f"{c['cell']}/{c['solver']} {c['overhead_deqlib']:.2f}" for c in bad)
                if bad
                else ""
            )
        )
    passed = all(c["guard"]["passed"] for c in res["cases"])
    worst = max((c["guard"]["diff_deqlib_vs_torchdeq_max"] for c in res["cases"]), default=float("nan"))
    lines += [
        f"- correctness guard (both libraries within {res['settings']['guard_factor']:g} x tol of a float64 reference "
        f"fixed point, every sample at the tolerance) passed for every case: {_ok(passed)}; largest per-sample relative "
        f"difference deqlib vs torchdeq {worst:.1e}.",
        "",
    ]
    return lines


def speedups_section(res: Dict[str, Any]) -> List[str]:
    s = res["settings"]
    lines = [
        "## Speed-ups of deqlib's solvers (before / after)",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        "*baseline*: the solvers before this work (frozen in `benchmarks/baseline_solvers.py`); *tracker*: the baseline "
        "solvers with the new per-sample bookkeeping (change 1); *current*: `deqlib.solvers` (changes 1-3, described in "
        f"`benchmarks/bench_speedups.py`). tol = {s['tol']:g} (rel), max_iter = {s['max_iter']}, options {s['options']}; "
        f"median of {s['repeats']} interleaved repeats. Speed-up = baseline time / time.",
        "",
    ]
    rows = []
    for c in res["cases"]:
        m = c["median_s"]
        rows.append(
            [
                c["cell"],
                str(c["batch"]),
                c["solver"],
                str(c["nfev"]),
                _ms(m["baseline"]),
                _ms(m["tracker"]),
                _ms(m["current"]),
                f"{c['speedup_tracker']:.2f}",
                f"**{c['speedup_total']:.2f}**",
            ]
        )
    lines += _table(
        [
            "cell",
            "batch",
            "solver",
            "nfev",
            "baseline ms",
            "tracker ms",
            "current ms",
            "speed-up (change 1)",
            "speed-up (all)",
        ],
        rows,
    )
    eq = res.get("equivalence", {})
    if eq:
        same = all(v2["same_steps"] and v2["same_nfev"] for v in eq.values() for s_ in v.values() for v2 in s_.values())
        worst = max(v2["max_abs_diff"] for v in eq.values() for s_ in v.values() for v2 in s_.values())
        lines += [
            "",
            f"Same results: steps per sample and nfev identical to the baseline in every case: {_ok(same)}; "
            f"largest absolute difference of the returned fixed points {worst:.1e} (float32 rounding).",
            "",
        ]
    if res.get("bmm_forms"):
        lines += ["Batched matrix-vector products on this CPU (change 3), microseconds per call:", ""]
        lines += _table(
            ["N, n, d", "bmm(A, x[..., None]) us", "bmm(x[:, None], A^T) us", "speed-up"],
            [
                [
                    ", ".join(map(str, r["shape"])),
                    f"{r['column_form_s'] * 1e6:.0f}",
                    f"{r['row_form_s'] * 1e6:.0f}",
                    f"{r['speedup']:.1f}",
                ]
                for r in res["bmm_forms"]
            ],
        )
        lines.append("")
    if res.get("weight_layouts"):
        lines += [
            "Anderson's mixing product `bmm(alpha[:, None], F)` with the weights as `torch.linalg.solve_ex` returns them "
            "(column-major) and made contiguous (change 3), microseconds per call:",
            "",
        ]
        lines += _table(
            ["N, n, d", "column-major us", "contiguous (with the copy) us", "speed-up"],
            [
                [
                    ", ".join(map(str, r["shape"])),
                    f"{r['column_major_s'] * 1e6:.0f}",
                    f"{r['contiguous_s'] * 1e6:.0f}",
                    f"{r['speedup']:.1f}",
                ]
                for r in res["weight_layouts"]
            ],
        )
        lines.append("")
    if res.get("compile"):
        lines += [
            "`torch.compile` of the cell f (default inductor backend; the compile time depends on inductor's on-disk "
            "cache, warm here):",
            "",
        ]
        rows = []
        for r in res["compile"]:
            if "error" in r:
                rows.append([r["cell"], str(r["batch"]), "—", "—", "—", r["error"]])
            else:
                rows.append(
                    [
                        r["cell"],
                        str(r["batch"]),
                        f"{r['compile_s']:.1f}",
                        _ms(r["eager_f_s"]),
                        _ms(r["compiled_f_s"]),
                        f"{r['speedup']:.2f}",
                    ]
                )
        lines += _table(["cell", "batch", "compile s", "eager f ms", "compiled f ms", "speed-up"], rows)
        lines.append("")
    return lines


def backward_section(res: Dict[str, Any]) -> List[str]:
    s = res["settings"]
    lines = [
        "## Backward: IFT vs phantom vs unrolling, as the forward iterations grow",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        "The DEQ layer alone, fixed-point solver forced to take exactly K steps (the IFT's adjoint solve too; phantom: "
        f"{s['phantom_steps']} damped steps, tau {s['phantom_tau']}). One forward + backward; time: median of "
        f"{s['repeats']} interleaved repeats. *saved*: bytes autograd saves for backward (distinct storages, via "
        "`saved_tensors_hooks`); *peak*: peak live bytes of PyTorch's CPU allocator during forward + backward, "
        "relative to the start (running sum of the operators' allocations in `torch.profiler` with `profile_memory`). "
        "Both are deterministic.",
        "",
    ]
    rows = []
    for r in res["rows"]:
        rows.append(
            [
                f"{r['cell']} ({r['batch']})",
                r["grad"],
                str(r["forward_iters"]),
                _ms(r["time_s"]),
                _mib(r["saved_bytes"]),
                _mib(r["peak_bytes"]),
                _mib(r.get("trace_bytes", float("nan"))),
            ]
        )
    lines += _table(
        ["cell (batch)", "gradient", "K", "fwd + bwd ms", "saved MiB", "peak MiB", "of which residual traces MiB"], rows
    )
    lines += ["", "Growth from the smallest to the largest K (ratio of the K = max value to the K = min value):", ""]
    rows = []
    ift_ok = True
    ift_ok_wo = True
    for key, v in res["summary"].items():
        wo = v.get("peak_minus_traces_ratio_max_over_min_iters")
        rows.append(
            [
                key,
                f"{v['peak_ratio_max_over_min_iters']:.2f}",
                f"{wo:.2f}" if wo is not None else "—",
                f"{v['saved_ratio_max_over_min_iters']:.2f}",
                f"{v['time_ratio_max_over_min_iters']:.2f}",
            ]
        )
        if key.endswith("/ift") and v["peak_ratio_max_over_min_iters"] > GOAL_IFT_MEMORY:
            ift_ok = False
        if key.endswith("/ift") and wo is not None and wo > GOAL_IFT_MEMORY:
            ift_ok_wo = False
    lines += _table(
        ["cell/batch/gradient", "peak ratio", "peak ratio without traces", "saved ratio", "time ratio"], rows
    )
    lines += [
        "",
        f"Goal — the IFT's peak memory stays flat (ratio <= {GOAL_IFT_MEMORY}) while unrolling grows: "
        f"{_ok(ift_ok)} (peak including the residual traces), {_ok(ift_ok_wo)} (without them; saved tensors: "
        "constant).",
        "",
    ]
    return lines


def training_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        "## Training throughput",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        f"`deqlib.train.fit` on CPU with the book's fast-mode recipe ({res['settings']['recipe']}); PGD-AT with "
        f"`deqlib.losses.PGDAT({', '.join(f'{k}={v}' for k, v in res['settings']['pgd'].items())})`. Breakdown: wall time "
        "inside deqlib's forward solves, IFT adjoint solves and the inner attack (the solves made by the attack are "
        "counted in the attack).",
        "",
    ]
    rows = []
    for r in res["runs"]:
        b = r["breakdown"]
        tot = b["total_s"]

        def pct(x: float) -> str:
            return f"{x:.1f} s ({100 * x / tot:.0f}%)"

        rows.append(
            [
                r["kind"],
                str(r["samples"]),
                f"**{r['samples_per_s']:.1f}**",
                f"{r['epoch_s_extrapolated']:.0f}",
                pct(b["train_forward_solves_s"]),
                pct(b["train_adjoint_solves_s"]),
                pct(b["attack_s"]),
                pct(b["rest_s"]),
                f"{r['solver_steps_mean']:.1f}" if r.get("solver_steps_mean") is not None else "—",
            ]
        )
    lines += _table(
        [
            "run",
            "samples timed",
            "samples/s",
            "epoch s (4,000 digits)",
            "forward solves",
            "adjoint solves (backward)",
            "attack",
            "rest (cell graph, optimizer, data)",
            "mean solver steps",
        ],
        rows,
    )
    for r in res["runs"]:
        if r.get("top_ops"):
            lines += [
                "",
                f"Top operators by self CPU time, {r['kind']} ({r['top_ops_batches']} batch(es), torch.profiler):",
                "",
            ]
            tot = sum(o["self_cpu_s"] for o in r["top_ops"])
            lines += _table(
                ["operator", "self CPU s", "calls"],
                [[f"`{o['op']}`", f"{o['self_cpu_s']:.2f}", str(o["calls"])] for o in r["top_ops"][:8]],
            )
    lines.append("")
    return lines


def notebooks_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        "## Notebooks: fast-mode execution time",
        "",
        f"Run: {_meta_line(res['meta'])}. Each notebook executed by nbclient in a fresh kernel with `DEQLIB_MODE=fast`; "
        f"PyTorch threads in the kernels: {res['settings']['threads']}.",
        "",
    ]
    rows = []
    for r in res["notebooks"]:
        slow = "; ".join(f"cell {c['cell']} {c['seconds']:.1f} s" for c in r["slowest_cells"])
        rows.append(
            [
                f"`{r['notebook']}`",
                f"{r['seconds']:.1f}",
                "ok" if r["ok"] else f"**error**: {r['error']}",
                str(r["code_cells"]),
                slow,
            ]
        )
    lines += _table(["notebook", "seconds", "status", "code cells", "slowest cells"], rows)
    lines.append("")
    return lines


def warmstart_section(res: Dict[str, Any]) -> List[str]:
    st, aa, ep = res["settings"], res["autoattack"], res["pgd_at_epoch"]
    lines = [
        "## Warm starts",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        f"`{st['attack']}` on {st['digits']} mnist5k test digits, on a DEQ trained with PGD-AT "
        f"({', '.join(f'{k}={v}' for k, v in st['pgd_at'].items())}, {st['train_epochs']} epochs"
        + (f"; {st['model']}, clean accuracy {100 * res['clean_accuracy']:.1f} %" if "clean_accuracy" in res else "")
        + "), with deqlib's warm "
        "starts (the default) and inside `warm_starts(model, enabled=False)`, in one run. Verdicts: the robust / "
        f"non-robust verdict per digit differs on **{res['verdicts_differ']}** of {st['digits']} digits.",
        "",
    ]
    rows = []
    for name in ("warm", "cold"):
        r = aa[name]
        pool = r["pool_stats"] or {}
        rows.append(
            [
                name,
                f"{r['seconds']:.1f}",
                f"{100 * r['robust_accuracy']:.1f} %",
                f"{100 * r['forward_converged_fraction']:.2f} %",
                f"{100 * r['adjoint_converged_fraction']:.2f} %",
                f"{pool.get('warm', 0)} / {pool.get('warm', 0) + pool.get('cold', 0)}" if pool else "off",
            ]
        )
    lines += _table(
        ["AutoAttack", "seconds", "robust acc.", "forward converged", "adjoint converged", "warm rows"], rows
    )
    lines += [
        "",
        f"Time ratio warm / cold: **{res['autoattack_time_ratio_warm_over_cold']:.2f}**. One PGD-AT epoch "
        f"from the same initial weights: {ep['warm']['seconds']:.1f} s warm, {ep['cold']['seconds']:.1f} s cold "
        f"(ratio **{res['pgd_at_epoch_time_ratio_warm_over_cold']:.2f}**; training loss {ep['warm']['train_loss']:.3f} "
        f"vs {ep['cold']['train_loss']:.3f}; mean solver steps per sample {ep['warm']['solver_steps']:.1f} vs "
        f"{ep['cold']['solver_steps']:.1f}).",
        "",
    ]
    return lines


def adversarial_section(res: Dict[str, Any]) -> List[str]:
    st = res["settings"]
    lines = [
        "## A PGD-AT epoch: deqlib against torchdeq + torchattacks",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        f"The same MLP DEQ (width {st['width']}, Anderson, IFT, solve {st['solve']}) from the same initial weights, "
        f"PGD-AT ({', '.join(f'{k}={v}' for k, v in st['pgd'].items())}), batch {st['batch']}, Adam {st['lr']}, one "
        f"epoch of {st['samples']} mnist5k digits; the reference is torchdeq's DEQ with torchattacks' PGD in train "
        "mode. Each side ran twice, alternating; the faster run is shown.",
        "",
    ]
    rows = [[side, f"{res[side]['seconds']:.1f}", f"{res[side]['train_loss']:.3f}"] for side in ("deqlib", "reference")]
    lines += _table(["side", "seconds", "training loss"], rows)
    lines += ["", f"Ratio deqlib / reference: **{res['ratio_deqlib_over_reference']:.2f}** (goal ≤ 0.3).", ""]
    return lines


def defences_section(res: Dict[str, Any]) -> List[str]:
    st = res["settings"]
    lines = [
        "## Chapter 7's defences against a plain forward",
        "",
        f"Run: {_meta_line(res['meta'])}.",
        "",
        f"{st['digits']} mnist5k test digits in one batch, no gradient, the fastest of {st['repeats']} runs each, "
        f"on the zoo's PGD-AT MLP DEQ (the random-depth model: its own zoo recipe); entropy reduction with ball "
        f"{st['radius']['eps']} and step {st['radius']['eta']}.",
        "",
    ]
    rows = [
        [
            name,
            f"{r['ms_per_digit']:.2f}",
            f"{r['ratio_to_plain']:.1f}",
            f"{100 * r['accuracy']:.1f} %",
            f"{100 * r['agreement_with_plain']:.1f} %",
        ]
        for name, r in res["defences"].items()
    ]
    lines += _table(["model", "ms per digit", "× plain", "clean accuracy", "agrees with plain"], rows)
    return lines + [""]


SECTIONS = [
    ("solvers", solvers_section),
    ("speedups", speedups_section),
    ("backward", backward_section),
    ("training", training_section),
    ("warmstart", warmstart_section),
    ("adversarial", adversarial_section),
    ("defences", defences_section),
    ("notebooks", notebooks_section),
]


def render(folder: Path) -> str:
    results = {name: read_json(folder / f"{name}.json") for name, _ in SECTIONS}
    commands = sorted({r["meta"]["command"] for r in results.values() if r})
    quick = any(r["meta"].get("quick") for r in results.values() if r)
    lines = [
        "# Benchmarks of deqlib",
        "",
        "Generated by `python -m benchmarks.summary` from the JSON files beside this one"
        + (" (**quick smoke run: not representative**)" if quick else "")
        + ". Made with: "
        + ", ".join(f"`{c}`" for c in commands)
        + " (from the repository root; see `benchmarks/README.md`).",
        "",
        "Wall-clock numbers depend on the machine and on its load: each part records both. They are measurements, "
        "not tests; nothing in CI depends on them.",
        "",
    ]
    for name, fn in SECTIONS:
        if results[name]:
            lines += fn(results[name])
    if NOTES.exists() and not quick:
        lines += [NOTES.read_text().rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(folder: Path) -> Path:
    path = folder / "summary.md"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(render(folder))
    return path


def _main(argv: Optional[List[str]] = None) -> int:
    import argparse

    from .common import RESULTS

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.summary", description="Re-render summary.md from the JSON results."
    )
    p.add_argument("folder", nargs="?", default=str(RESULTS))
    a = p.parse_args(argv)
    print(write_summary(Path(a.folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
