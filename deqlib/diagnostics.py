"""Diagnostics of a fixed point: spectral radius of the Jacobian and its Frobenius norm (Hutchinson); how many
samples of a model's solves did not converge (:func:`convergence_report`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from ._validate import check_bool, check_callable, check_int, check_tensor


def spectral_radius(
    f: Callable[[Tensor], Tensor],
    z: Tensor,
    *,
    n_iter: int = 50,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Estimate the spectral radius of J = df/dz at z, per sample, by power iteration.

    J^T has the same eigenvalues as J, so the iteration uses vector-Jacobian products (reverse mode, one graph
    of f built once). The growth rate of ||(J^T)^k v|| is averaged (geometrically) over the second half of the
    iterations, which also gives the modulus of a dominant complex pair. A value below 1 means the fixed-point
    iteration is locally contractive around z.

    Args:
        f: the map whose Jacobian is examined (e.g. ``lambda z: cell(z, x)``); must not mix samples.
        z: (N, ...) the point (usually a fixed point).
        n_iter: power iterations (>= 2).
        generator: optional CPU RNG for the start vector.

    Returns:
        (N,) estimates of rho(J).
    """
    where = "spectral_radius"
    check_callable(f, "f", where, "as f(z) -> a state of z's shape")
    check_tensor(z, "z", where, floating=True, batch=True)
    n_iter = check_int(n_iter, "n_iter", where, minimum=2)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{where}: generator must be a torch.Generator, got {type(generator).__name__}")
    n = z.shape[0]
    view = (n,) + (1,) * (z.dim() - 1)
    v = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    v = v / v.reshape(n, -1).norm(dim=1).clamp_min(1e-30).view(view)
    with torch.enable_grad():
        z_in = z.detach().requires_grad_()
        out = f(z_in)
    if not isinstance(out, Tensor) or out.shape != z.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{where}: f must map a state of shape {tuple(z.shape)} to the same shape, got {got}")
    logs = []
    for k in range(n_iter):
        (jtv,) = torch.autograd.grad(out, z_in, v, retain_graph=True)
        norm = jtv.reshape(n, -1).norm(dim=1)
        if k >= n_iter // 2:
            logs.append(torch.log(norm.clamp_min(1e-30)))
        v = jtv / norm.clamp_min(1e-30).view(view)
    return torch.exp(torch.stack(logs).mean(dim=0)).detach()


def jacobian_frobenius(f_out: Tensor, z_in: Tensor, *, n_samples: int = 1, create_graph: bool = True) -> Tensor:
    """Hutchinson estimate of ||df/dz||_F^2 per sample (Bai et al. 2021, Jacobian regularisation).

    Uses E_v ||v^T J||^2 = ||J||_F^2 for v ~ N(0, I), with vector-Jacobian products on an existing graph.

    Args:
        f_out: f(z_in), computed with z_in requiring grad.
        z_in: the state the graph starts from.
        n_samples: random probes averaged (>= 1).
        create_graph: keep the graph so the estimate can be minimised as a regulariser.

    Returns:
        (N,) estimates (divide by the state dimension for the per-entry version used as a loss).
    """
    where = "jacobian_frobenius"
    check_tensor(f_out, "f_out", where, floating=True, batch=True)
    check_tensor(z_in, "z_in", where, floating=True, batch=True)
    n_samples = check_int(n_samples, "n_samples", where, minimum=1)
    create_graph = check_bool(create_graph, "create_graph", where)
    if not z_in.requires_grad or not f_out.requires_grad:
        raise ValueError(f"{where}: z_in must require grad and f_out be computed from it")
    if f_out.shape[0] != z_in.shape[0]:
        raise ValueError(f"{where}: f_out has batch {f_out.shape[0]}, z_in has batch {z_in.shape[0]}")
    n = z_in.shape[0]
    total = f_out.new_zeros(n)
    for i in range(n_samples):
        v = torch.randn_like(f_out)
        retain = True if create_graph else i < n_samples - 1
        (vjp,) = torch.autograd.grad(f_out, z_in, v, create_graph=create_graph, retain_graph=retain, allow_unused=True)
        if vjp is None:
            raise ValueError(f"{where}: f_out was not computed from z_in (no path from z_in to f_out in the graph)")
        total = total + vjp.reshape(n, -1).pow(2).sum(dim=1)
    return total / n_samples


class ConvergenceReport:
    """What :func:`convergence_report` yields: the solves of all DEQs of a model during the ``with`` block.

    ``counts`` is a :class:`~deqlib.solvers.ConvergenceCounts` (live inside the block, final after it);
    ``as_dict()`` gives ``forward_nonconverged_fraction``, ``backward_nonconverged_fraction`` (``None`` where
    no sample was solved), ``forward_solves``, ``backward_solves`` and the sample counts behind the fractions.
    """

    def __init__(self) -> None:
        from .solvers import ConvergenceCounts

        self.counts = ConvergenceCounts()

    def as_dict(self) -> dict:
        return self.counts.as_dict()

    def __repr__(self) -> str:
        return f"ConvergenceReport({self.as_dict()})"


@contextmanager
def convergence_report(model: nn.Module) -> Iterator[ConvergenceReport]:
    """Count the forward and adjoint solves of every DEQ of ``model`` (itself included) inside the block.

    Each DEQ keeps its own running counts (``deq.convergence``); the report adds up those made during the block,
    over all DEQs (the analysis ``DEQ.solve`` is not counted). Combine it with
    :func:`~deqlib.solvers.quiet_convergence` to replace a loop's per-solve warnings by one summary.

    Example:
        >>> import torch
        >>> from deqlib import DEQ, MLPCell
        >>> from deqlib.solvers import quiet_convergence
        >>> deq = DEQ(MLPCell(8), max_iter=2, tol=1e-12)
        >>> with convergence_report(deq) as report, quiet_convergence():
        ...     deq(torch.randn(4, 8, requires_grad=True)).sum().backward()
        >>> report.as_dict()["forward_nonconverged_fraction"], report.as_dict()["backward_solves"]
        (1.0, 1)
    """
    from ._modules import deq_modules  # here: deqlib.deq imports this module

    if not isinstance(model, nn.Module):
        raise TypeError(f"convergence_report: model must be an nn.Module, got {type(model).__name__}")
    report = ConvergenceReport()
    handles = [deq.convergence.attach(report.counts) for deq in deq_modules(model)]
    try:
        yield report
    finally:
        for handle in handles:
            handle.remove()
