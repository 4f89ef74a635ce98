"""A Broyden solve that can be paused and continued on a changed function, its memory kept.

The released input-entropy-reduction defence (Yang et al. 2023; ``../shared/PAPERS.md`` §3) alternates two Broyden
steps on the current input with steps on the input itself; the solver's state and its inverse-Jacobian estimate
carry over from one round to the next although the function f(., x_t) has changed. :class:`ContinuedBroyden`
is that solver: :meth:`~ContinuedBroyden.run` takes a few steps on the function it is given, starting from where the
last call stopped, and returns the lowest-residual iterate of the call (as the released code's Broyden does).

API: :class:`ContinuedBroyden`.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor

from .._validate import check_int, check_tensor
from .broyden import low_rank_product

__all__ = ["ContinuedBroyden"]


class ContinuedBroyden:
    """Good Broyden steps on g(z) = f(z) - z, continued across calls whose f may differ; no graph.

    The estimate B^{-1} = -I + sum_i u_i v_i^T persists between calls; at the start of each call g is evaluated
    anew at the current iterate with the call's f (one f evaluation: the "update for the new input"), then ``steps``
    quasi-Newton steps follow, without line search, each one f evaluation. The memory restarts from -I when full,
    as :func:`~deqlib.solvers.broyden` does. The iterate continues from the LAST step of a call; the call returns its
    lowest-residual iterate per sample (the state a caller reads).

    Args:
        z0: the starting state, of shape ``(N, *state)``.
        memory: rank-one updates kept (>= 1).

    Example:
        >>> A = torch.tensor([[0.5, 0.2], [0.0, 0.8]])
        >>> solver = ContinuedBroyden(torch.zeros(1, 2))
        >>> z = solver.run(lambda z: z @ A.T + 1.0, 10)
        >>> z_star = torch.linalg.solve(torch.eye(2) - A, torch.ones(2))
        >>> bool(torch.allclose(z[0], z_star, atol=1e-4))
        True
    """

    def __init__(self, z0: Tensor, memory: int = 20) -> None:
        where = "ContinuedBroyden"
        check_tensor(z0, "z0", where, batch=True)
        self.memory = check_int(memory, "memory", where, minimum=1)
        self.shape = z0.shape
        self.z = z0.detach().reshape(z0.shape[0], -1).clone()
        self.us: List[Tensor] = []
        self.vs: List[Tensor] = []
        self.steps_taken = 0
        self.last_residual: Optional[Tensor] = None

    def _g(self, f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
        fz = f(z.reshape(self.shape)).reshape(z.shape[0], -1)
        if not torch.isfinite(fz).all():
            raise FloatingPointError("ContinuedBroyden: f returned a non-finite value")
        return fz - z

    def _update(self, dz: Tensor, dg: Tensor) -> None:
        if len(self.us) == self.memory:
            self.us.clear()
            self.vs.clear()
        vt = -dz + low_rank_product(self.us, self.vs, dz, transpose=True)  # dz^T B^{-1}
        binv_dg = -dg + low_rank_product(self.us, self.vs, dg)
        den = (vt * dg).sum(dim=1)
        eps = torch.finfo(dz.dtype).eps
        ok = torch.isfinite(den) & (den.abs() > eps * vt.norm(dim=1) * dg.norm(dim=1))
        safe = torch.where(ok, den, torch.ones_like(den)).unsqueeze(1)
        self.us.append(torch.where(ok.unsqueeze(1), (dz - binv_dg) / safe, 0.0))
        self.vs.append(torch.where(ok.unsqueeze(1), vt, 0.0))

    @torch.no_grad()
    def run(self, f: Callable[[Tensor], Tensor], steps: int) -> Tensor:
        """``steps`` Broyden steps on f from the current iterate; the call's lowest-residual iterate, shaped as z0.

        The candidates are the iterate the call starts from and each of its steps, judged by ||f(z) - z|| under
        this call's f; ``last_residual`` holds the chosen iterate's residual norm per sample.
        """
        steps = check_int(steps, "steps", "ContinuedBroyden.run", minimum=1)
        z = self.z
        gz = self._g(f, z)
        best, best_res = z, gz.norm(dim=1)
        for _ in range(steps):
            z_next = z + gz - low_rank_product(self.us, self.vs, gz)  # z - B^{-1} g(z)
            gz_next = self._g(f, z_next)
            self._update(z_next - z, gz_next - gz)
            res = gz_next.norm(dim=1)
            better = res < best_res
            best = torch.where(better.unsqueeze(1), z_next, best)
            best_res = torch.where(better, res, best_res)
            z, gz = z_next, gz_next
        self.z, self.steps_taken, self.last_residual = z, self.steps_taken + steps, best_res
        return best.reshape(self.shape)
