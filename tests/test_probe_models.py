"""Probe (issue 16): bad inputs to the data, model, DEQ, solver, diagnostic, Lyapunov and defence constructors.

A table of bad inputs, each one a mistake a new user makes, across this part of the public API. Every case must
raise the error the validation policy prescribes (``TypeError`` for a wrong type, ``ValueError`` for a wrong value)
with a message that names the argument; none may raise a raw torch / Python error (``IndexError``,
``AttributeError``, ``ZeroDivisionError``, "too many values to unpack", torch's ``RuntimeError``, ...) or return
without a word.

``PYTHONPATH=. python tests/test_probe_models.py`` prints each case's outcome and the counts (clear / unclear / silent).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Tuple, Type

import numpy as np
import pytest
import torch

from deqlib import DEQ, anderson, conv_classifier, data, fixed_point, mlp_classifier
from deqlib.cells import ConvCell, MLPCell, classifier_for
from deqlib.defenses import (
    AveragedStateClassifier,
    EarlyStateClassifier,
    EntropyReductionDefense,
    LyapunovStableCell,
    RandomDepthClassifier,
    lyadeq_classifier,
    orthogonal_linear,
)
from deqlib.diagnostics import jacobian_frobenius, spectral_radius
from deqlib.lyapunov import ICNN, LyapunovFunction, ReHU, StableDynamics, lyapunov_decrease, stable_projection
from deqlib.solvers import broyden, damped_steps, get_solver, register_solver

# ----------------------------------------------------------------------------------------------------------- setup


def _dataset_kw(**over):
    kw = dict(name="x", split="train", num_classes=2, mean=(0.5,), std=(0.5,), classes=["a", "b"])
    kw.update(over)
    return kw


def _images(n=3, value=None, dtype=torch.float32):
    x = torch.rand(n, 1, 2, 2).to(dtype)
    return x if value is None else torch.full_like(x, value)


def _dataset(images=None, labels=None, **over):
    images = _images() if images is None else images
    labels = torch.tensor([0, 1, 1]) if labels is None else labels
    return data.ImageDataset(images, labels, **_dataset_kw(**over))


def _mlp(**over):
    torch.manual_seed(0)
    kw = dict(mean=(0.3,), std=(0.4,), width=8, max_iter=10)
    kw.update(over)
    return mlp_classifier((1, 8, 8), 10, **kw)


def _conv(**over):
    torch.manual_seed(0)
    kw = dict(mean=(0.3,), std=(0.4,), channels=4, groups=2, max_iter=5)
    kw.update(over)
    return conv_classifier((1, 8, 8), 10, **kw)


def _x(n=2, **kw):
    return torch.rand(n, 1, 8, 8, **kw)


def _solver_returning_a_tensor(f, z0, *, max_iter, tol, stop_mode, record):
    return f(z0)


def _solver_returning_a_dict(f, z0, *, max_iter, tol, stop_mode, record):
    return f(z0), {"steps": 1}


def _solver_changing_the_shape(f, z0, *, max_iter, tol, stop_mode, record):
    z, info = fixed_point(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, record=record)
    return z[:, :2], info


def _deq_call(deq, n=3, width=4, backward=False):
    x = torch.randn(n, width, requires_grad=backward)
    out = deq(x)
    if backward:
        out.sum().backward()
    return out


def _jacobian_unrelated():
    z_in = torch.randn(2, 3, requires_grad=True)
    other = torch.randn(2, 3, requires_grad=True)
    return jacobian_frobenius(other * 2, z_in)


def _jacobian(n_samples=1, create_graph=True, z_in=None):
    z = torch.randn(2, 3, requires_grad=True)
    return jacobian_frobenius(
        torch.tanh(z), z if z_in is None else z_in, n_samples=n_samples, create_graph=create_graph
    )


def _lyap():
    torch.manual_seed(0)
    return LyapunovFunction(4, hidden=(8,))


class _NotADataset:
    pass


# ----------------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One bad input: ``call()`` must raise one of ``errors`` with a message matching ``match``."""

    id: str
    call: Callable[[], object]
    errors: Tuple[Type[BaseException], ...]
    match: str


T, V = (TypeError,), (ValueError,)
DU = (data.DataUnavailableError,)

CASES = [
    # -- ImageDataset and the loaders ------------------------------------------------------------------------
    Case("dataset-label-too-large", lambda: _dataset(labels=torch.tensor([0, 1, 5])), V, r"labels.*\[0, 2\)"),
    Case("dataset-label-negative", lambda: _dataset(labels=torch.tensor([0, -1, 1])), V, r"labels.*\[0, 2\)"),
    Case("dataset-float-images-0-255", lambda: _dataset(_images(value=255.0)), V, r"images.*\[0, 1\]"),
    Case("dataset-negative-pixels", lambda: _dataset(_images(value=-0.5)), V, r"images.*\[0, 1\]"),
    Case("dataset-nan-images", lambda: _dataset(_images(value=float("nan"))), V, r"images.*NaN"),
    Case("dataset-float64-images", lambda: _dataset(_images(dtype=torch.float64)), T, r"images.*float32"),
    Case("dataset-float16-images", lambda: _dataset(_images(dtype=torch.float16)), T, r"images.*float32"),
    Case("dataset-3d-images", lambda: _dataset(torch.rand(3, 2, 2)), V, r"images must be a 4-d"),
    Case("dataset-images-list", lambda: _dataset(_images().tolist()), T, r"images must be a torch.Tensor"),
    Case("dataset-images-numpy", lambda: _dataset(_images().numpy()), T, r"images must be a torch.Tensor"),
    Case("dataset-float-labels", lambda: _dataset(labels=torch.tensor([0.0, 1.0, 1.0])), T, r"labels must be int"),
    Case("dataset-bool-labels", lambda: _dataset(labels=torch.tensor([True, False, True])), T, r"labels must be int"),
    Case("dataset-string-labels", lambda: _dataset(labels=["a", "b", "b"]), T, r"labels must be"),
    Case("dataset-labels-wrong-length", lambda: _dataset(labels=torch.tensor([0, 1])), V, r"labels must have shape"),
    Case("dataset-labels-2d", lambda: _dataset(labels=torch.tensor([[0], [1], [1]])), V, r"labels must have shape"),
    Case("dataset-num-classes-0", lambda: _dataset(num_classes=0, classes=[]), V, r"num_classes must be an int >="),
    Case("dataset-num-classes-str", lambda: _dataset(num_classes="2"), T, r"num_classes must be an int"),
    Case("dataset-num-classes-float", lambda: _dataset(num_classes=2.0), T, r"num_classes must be an int"),
    Case("dataset-mean-wrong-length", lambda: _dataset(_images(), mean=(0.5, 0.5)), V, r"mean and std"),
    Case("dataset-std-zero", lambda: _dataset(std=(0.0,)), V, r"std.*> 0"),
    Case("dataset-mean-str", lambda: _dataset(mean="0.5"), T, r"mean"),
    Case("dataset-classes-wrong-length", lambda: _dataset(classes=["a"]), V, r"classes needs 2 names"),
    Case("dataset-name-not-str", lambda: _dataset(name=5), T, r"name must be a str"),
    Case("subset-n-0", lambda: _dataset().subset(0), V, r"n must be an int >= 1"),
    Case("subset-n-float", lambda: _dataset().subset(1.5), T, r"n must be an int"),
    Case("subset-seed-negative", lambda: _dataset().subset(1, seed=-1), V, r"seed must be"),
    Case("tensors-bad-device", lambda: _dataset().tensors(device="gpu0"), V, r"device"),
    Case("tensors-device-int-list", lambda: _dataset().tensors(device=[0]), T, r"device"),
    Case("load-unknown-name", lambda: data.load("mnist6k"), V, r"unknown data set 'mnist6k'"),
    Case("load-name-int", lambda: data.load(5), T, r"data set must be one of"),
    Case("load-unknown-split", lambda: data.load("digits", "val"), V, r"unknown split 'val'"),
    Case("load-root-int", lambda: data.load("mnist", root=5), T, r"root must be a path"),
    Case("load-download-str", lambda: data.load("digits", download="no"), T, r"download must be True or False"),
    # -- cells and builders -----------------------------------------------------------------------------------
    Case("mlp-width-0", lambda: _mlp(width=0), V, r"width must be an int >= 1"),
    Case("mlp-width-negative", lambda: _mlp(width=-3), V, r"width must be an int >= 1"),
    Case("mlp-width-float", lambda: _mlp(width=2.5), T, r"width must be an int"),
    Case("mlp-num-classes-0", lambda: mlp_classifier((1, 8, 8), 0, mean=(0.3,), std=(0.4,)), V, r"num_classes"),
    Case("mlp-num-classes-float", lambda: mlp_classifier((1, 8, 8), 10.0, mean=(0.3,), std=(0.4,)), T, r"num_classes"),
    Case("mlp-image-shape-2d", lambda: mlp_classifier((8, 8), 10, mean=(0.3,), std=(0.4,)), V, r"image_shape"),
    Case("mlp-image-shape-zero", lambda: mlp_classifier((1, 0, 8), 10, mean=(0.3,), std=(0.4,)), V, r"image_shape"),
    Case("mlp-image-shape-int", lambda: mlp_classifier(64, 10, mean=(0.3,), std=(0.4,)), T, r"image_shape"),
    Case("mlp-mean-per-rgb-on-grey", lambda: _mlp(mean=(0.3,) * 3, std=(0.4,) * 3), V, r"mean and std need 1"),
    Case("mlp-std-zero", lambda: _mlp(std=(0.0,)), V, r"std"),
    Case("mlp-mean-none", lambda: _mlp(mean=None), T, r"mean"),
    Case("mlp-weight-scale-str", lambda: _mlp(weight_scale="big"), T, r"weight_scale"),
    Case("mlp-activation-int", lambda: _mlp(activation=5), T, r"activation must be one of"),
    Case("mlp-activation-unknown", lambda: _mlp(activation="sigmoidal"), V, r"unknown activation"),
    Case("mlp-norm-str", lambda: _mlp(norm="yes"), T, r"norm must be True or False"),
    Case("mlp-typo-option", lambda: _mlp(widht=8), T, r"widht"),
    Case("conv-channels-0", lambda: _conv(channels=0), V, r"channels must be an int >= 1"),
    Case("conv-channels-float", lambda: _conv(channels=4.0), T, r"channels must be an int"),
    Case("conv-num-classes-0", lambda: conv_classifier((1, 8, 8), 0, mean=(0.3,), std=(0.4,)), V, r"num_classes"),
    Case("conv-groups-0", lambda: _conv(groups=0), V, r"groups must be an int >= 1"),
    Case("conv-downsample-negative", lambda: _conv(downsample=-1), V, r"downsample must be an int >= 0"),
    Case("conv-image-shape-int", lambda: conv_classifier(28, 10, mean=(0.3,), std=(0.4,)), T, r"image_shape"),
    Case("conv-weight-scale-negative", lambda: _conv(weight_scale=-0.1), V, r"weight_scale"),
    Case("mlpcell-width-0", lambda: MLPCell(0), V, r"width must be an int >= 1"),
    Case("mlpcell-width-str", lambda: MLPCell("8"), T, r"width must be an int"),
    Case("convcell-channels-0", lambda: ConvCell(0), V, r"channels must be an int >= 1"),
    Case("convcell-hidden-0", lambda: ConvCell(4, hidden=0), V, r"hidden must be an int >= 1"),
    Case("convcell-groups-0", lambda: ConvCell(4, groups=0), V, r"groups must be an int >= 1"),
    Case("classifier-for-object", lambda: classifier_for(object()), T, r"dataset.*image_shape"),
    Case("classifier-for-name", lambda: classifier_for("digits"), T, r"dataset"),
    Case("classifier-for-num-classes-twice", lambda: classifier_for(_dataset(), num_classes=3), T, r"num_classes"),
    Case("classifier-for-unknown-solver", lambda: classifier_for(_dataset(), solver="newton"), V, r"unknown solver"),
    Case(
        "mlp-mean-0d-tensor-rgb", lambda: _mlp(mean=torch.tensor(0.3), std=torch.tensor([0.4, 0.4])), V, r"mean and std"
    ),
    Case("classifier-for-kind-int", lambda: classifier_for(_dataset(), kind=1), T, r"classifier kind"),
    # -- the classifier's input -------------------------------------------------------------------------------
    Case("model-float64-images", lambda: _mlp()(_x(dtype=torch.float64)), T, r"float64.*float32"),
    Case("model-float16-images", lambda: _mlp()(_x(dtype=torch.float16)), T, r"float16.*float32"),
    Case("model-float64-conv", lambda: _conv()(_x(dtype=torch.float64)), T, r"float64.*float32"),
    Case("model-meta-device", lambda: _mlp()(_x(device="meta")), V, r"device"),
    Case("model-images-0-255", lambda: _mlp()(_x() * 255), V, r"pixels must be in \[0, 1\]"),
    Case("model-uint8-images", lambda: _mlp()((_x() * 255).to(torch.uint8)), T, r"float images"),
    Case("model-numpy-images", lambda: _mlp()(_x().numpy()), T, r"torch.Tensor"),
    Case("model-flat-images", lambda: _mlp()(torch.rand(2, 64)), V, r"expected images of shape"),
    Case("model-empty-batch", lambda: _mlp()(torch.rand(0, 1, 8, 8)), V, r"expected images of shape"),
    Case("model-solve-max-iter-0", lambda: _mlp().solve(_x(), max_iter=0), V, r"max_iter must be an int >= 1"),
    Case("model-solve-unknown-option", lambda: _mlp().solve(_x(), memroy=3), T, r"memroy"),
    # -- DEQ --------------------------------------------------------------------------------------------------
    Case("deq-backward-tol-negative", lambda: DEQ(MLPCell(4), backward_tol=-1), V, r"backward_tol must be"),
    Case("deq-backward-tol-str", lambda: DEQ(MLPCell(4), backward_tol="1e-3"), T, r"backward_tol must be"),
    Case("deq-backward-max-iter-0", lambda: DEQ(MLPCell(4), backward_max_iter=0), V, r"backward_max_iter must be"),
    Case("deq-backward-max-iter-float", lambda: DEQ(MLPCell(4), backward_max_iter=2.5), T, r"backward_max_iter"),
    Case("deq-backward-options-str", lambda: DEQ(MLPCell(4), backward_options="m=5"), T, r"backward_options"),
    Case("deq-backward-solver-unknown", lambda: DEQ(MLPCell(4), backward_solver="newton"), V, r"unknown solver"),
    Case("deq-solver-int", lambda: DEQ(MLPCell(4), solver=5), T, r"solver must be"),
    Case("deq-solver-lacks-kwargs", lambda: DEQ(MLPCell(4), solver=lambda f, z0: (z0, None)), T, r"solver.*lacks"),
    Case(
        "deq-solver-returns-tensor",
        lambda: _deq_call(DEQ(MLPCell(4), solver=_solver_returning_a_tensor)),
        T,
        r"solver.*must return \(z, info\)",
    ),
    Case(
        "deq-solver-returns-dict",
        lambda: _deq_call(DEQ(MLPCell(4), solver=_solver_returning_a_dict)),
        T,
        r"SolverInfo",
    ),
    Case(
        "deq-solver-changes-shape",
        lambda: _deq_call(DEQ(MLPCell(4), solver=_solver_changing_the_shape)),
        V,
        r"solver.*shape",
    ),
    Case(
        "deq-backward-solver-returns-tensor",
        lambda: _deq_call(DEQ(MLPCell(4), backward_solver=_solver_returning_a_tensor), backward=True),
        T,
        r"backward_solver.*must return \(z, info\)",
    ),
    Case("deq-record-str", lambda: DEQ(MLPCell(4), record="yes"), T, r"record must be True or False"),
    Case("deq-max-iter-0", lambda: DEQ(MLPCell(4), max_iter=0), V, r"max_iter must be an int >= 1"),
    Case("deq-tol-0", lambda: DEQ(MLPCell(4), tol=0), V, r"tol must be a finite number > 0"),
    Case("deq-phantom-steps-0", lambda: DEQ(MLPCell(4), phantom_steps=0), V, r"phantom_steps"),
    Case("deq-jac-reg-negative", lambda: DEQ(MLPCell(4), jac_reg_samples=-1), V, r"jac_reg_samples"),
    Case("deq-cell-not-callable", lambda: DEQ(5), T, r"cell must be callable"),
    Case("deq-float64-input", lambda: DEQ(MLPCell(4))(torch.randn(3, 4, dtype=torch.float64)), T, r"float64.*float32"),
    Case("deq-input-no-batch", lambda: DEQ(MLPCell(4))(torch.tensor(1.0)), V, r"x must have"),
    Case("deq-input-list", lambda: DEQ(MLPCell(4))([[0.0] * 4]), T, r"x must be a torch.Tensor"),
    Case("deq-int-input", lambda: DEQ(MLPCell(4))(torch.ones(3, 4, dtype=torch.long)), T, r"x must be a floating"),
    Case("deq-meta-input", lambda: DEQ(MLPCell(4))(torch.randn(3, 4, device="meta")), V, r"x is on meta"),
    Case("deq-backward-options-max-iter-0", lambda: DEQ(MLPCell(4), backward_options={"max_iter": 0}), V, "max_iter"),
    Case("deq-solve-record-str", lambda: DEQ(MLPCell(4)).solve(torch.randn(2, 4), record="yes"), T, r"record must be"),
    Case("deq-solve-tol-negative", lambda: DEQ(MLPCell(4)).solve(torch.randn(2, 4), tol=-1), V, r"tol must be"),
    Case(
        "deq-spectral-radius-n-iter", lambda: DEQ(MLPCell(4)).spectral_radius(torch.randn(2, 4), n_iter=1), V, "n_iter"
    ),
    # -- solvers ----------------------------------------------------------------------------------------------
    Case("solver-f-not-callable", lambda: fixed_point(torch.zeros(1, 2), torch.zeros(1, 2)), T, r"f must be callable"),
    Case(
        "solver-f-returns-tuple", lambda: fixed_point(lambda z: (z,), torch.zeros(1, 2)), T, r"f must return a tensor"
    ),
    Case("solver-z0-int", lambda: anderson(lambda z: z, torch.zeros(1, 2, dtype=torch.long)), T, r"z0"),
    Case("solver-z0-list", lambda: anderson(lambda z: z, [[0.0, 0.0]]), T, r"z0 must be a torch.Tensor"),
    Case("solver-z0-nan", lambda: anderson(lambda z: z, torch.full((1, 2), float("nan"))), V, r"z0 contains NaN"),
    Case("solver-record-str", lambda: fixed_point(lambda z: z, torch.zeros(1, 2), record="yes"), T, r"record"),
    Case("solver-tol-str", lambda: fixed_point(lambda z: z, torch.zeros(1, 2), tol="1e-3"), T, r"tol must be"),
    Case("anderson-m-0", lambda: anderson(lambda z: z, torch.zeros(1, 2), m=0), V, r"m must be an int >= 1"),
    Case("anderson-beta-0", lambda: anderson(lambda z: z, torch.zeros(1, 2), beta=0), V, r"beta"),
    Case("anderson-lam-negative", lambda: anderson(lambda z: z, torch.zeros(1, 2), lam=-1), V, r"lam"),
    Case("broyden-memory-0", lambda: broyden(lambda z: z, torch.zeros(1, 2), memory=0), V, r"memory"),
    Case("fixed-point-tau-0", lambda: fixed_point(lambda z: z, torch.zeros(1, 2), tau=0), V, r"tau"),
    Case("damped-steps-negative", lambda: damped_steps(lambda z: z, torch.zeros(1), steps=-1), V, r"steps"),
    Case("register-solver-name-int", lambda: register_solver(5, fixed_point), T, r"name must be a"),
    Case("register-solver-lacks-kwargs", lambda: register_solver("probe_bad", lambda f, z0: 0), T, r"lacks"),
    Case("get-solver-int", lambda: get_solver(5), T, r"solver must be"),
    Case("get-solver-unknown", lambda: get_solver("newton"), V, r"unknown solver 'newton'"),
    # -- diagnostics ------------------------------------------------------------------------------------------
    Case("jacobian-n-samples-0", lambda: _jacobian(n_samples=0), V, r"n_samples must be an int >= 1"),
    Case("jacobian-n-samples-negative", lambda: _jacobian(n_samples=-2), V, r"n_samples must be an int >= 1"),
    Case("jacobian-n-samples-float", lambda: _jacobian(n_samples=1.5), T, r"n_samples must be an int"),
    Case("jacobian-create-graph-str", lambda: _jacobian(create_graph="no"), T, r"create_graph must be True or"),
    Case("jacobian-z-in-numpy", lambda: _jacobian(z_in=np.zeros((2, 3))), T, r"z_in must be a torch.Tensor"),
    Case("jacobian-f-out-unrelated", _jacobian_unrelated, V, r"f_out.*z_in"),
    Case("spectral-radius-z-list", lambda: spectral_radius(torch.tanh, [[0.0]]), T, r"z must be a torch.Tensor"),
    Case("spectral-radius-f-str", lambda: spectral_radius("tanh", torch.zeros(2, 3)), T, r"f must be callable"),
    Case("spectral-radius-f-changes-shape", lambda: spectral_radius(lambda z: z[:, :2], torch.zeros(2, 3)), V, r"f"),
    Case(
        "spectral-radius-generator-int", lambda: spectral_radius(torch.tanh, torch.zeros(2, 3), generator=0), T, "gen"
    ),
    Case(
        "jacobian-batch-mismatch",
        lambda: jacobian_frobenius(torch.zeros(3, 1, requires_grad=True), torch.zeros(2, 1, requires_grad=True)),
        V,
        r"batch",
    ),
    Case("spectral-radius-n-iter-1", lambda: spectral_radius(torch.tanh, torch.zeros(2, 3), n_iter=1), V, r"n_iter"),
    # -- Lyapunov ---------------------------------------------------------------------------------------------
    Case("rehu-d-0", lambda: ReHU(0), V, r"d must be"),
    Case("icnn-in-features-0", lambda: ICNN(0), V, r"in_features"),
    Case("icnn-hidden-empty", lambda: ICNN(2, hidden=()), V, r"hidden"),
    Case("icnn-hidden-int", lambda: ICNN(2, hidden=8), T, r"hidden"),
    Case("lyapunov-nothing", lambda: LyapunovFunction(), V, r"in_features or icnn"),
    Case("lyapunov-eps-negative", lambda: LyapunovFunction(2, eps=-1), V, r"eps"),
    Case("stable-dynamics-not-callable", lambda: StableDynamics(5, _lyap()), T, r"dynamics must be callable"),
    Case("stable-dynamics-alpha-0", lambda: StableDynamics(lambda z: z, _lyap(), alpha=0), V, r"alpha"),
    Case(
        "stable-projection-alpha-0",
        lambda: stable_projection(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 4), 0),
        V,
        r"alpha",
    ),
    Case("lyapunov-decrease-one-state", lambda: lyapunov_decrease(_lyap(), [torch.zeros(2, 4)], 0.1), V, r"two states"),
    Case("lyapunov-decrease-alpha-dt", lambda: lyapunov_decrease(_lyap(), torch.zeros(3, 2, 4), 0.5, dt=4), V, "alpha"),
    # -- defence constructors ---------------------------------------------------------------------------------
    Case("random-depth-object", lambda: RandomDepthClassifier(object()), T, r"model must be a DEQClassifier"),
    Case("random-depth-max-depth-0", lambda: RandomDepthClassifier(_mlp(), max_depth=0), V, r"max_depth"),
    Case("early-state-index-0", lambda: EarlyStateClassifier(_mlp(), state_index=0), V, r"state indices"),
    Case("averaged-neither", lambda: AveragedStateClassifier(_mlp()), V, r"indices and last_k"),
    Case("entropy-T-f-0", lambda: EntropyReductionDefense(_mlp(), T_f=0), V, r"T_f"),
    Case("stable-cell-h-2", lambda: LyapunovStableCell(MLPCell(4), _lyap(), h=2), V, r"\bh\b"),
    Case("stable-cell-lyapunov-int", lambda: LyapunovStableCell(MLPCell(4), 5), T, r"lyapunov must be callable"),
    Case("lyadeq-object", lambda: lyadeq_classifier(object()), T, r"dataset.*image_shape"),
    Case("lyadeq-alpha-0", lambda: lyadeq_classifier(_dataset(), alpha=0), V, r"alpha"),
    Case("lyadeq-width-0", lambda: lyadeq_classifier(_dataset(), width=0), V, r"width must be an int >= 1"),
    Case("lyadeq-hidden-int", lambda: lyadeq_classifier(_dataset(), lyapunov_hidden=8), T, r"hidden"),
    Case("lyadeq-kind-unknown", lambda: lyadeq_classifier(_dataset(), kind="rnn"), V, r"unknown classifier kind"),
    Case("orthogonal-linear-0", lambda: orthogonal_linear(0), V, r"in_features"),
]

#: Errors that never count as clear, whatever their message: they come from deep inside torch or Python.
RAW = (IndexError, AttributeError, AssertionError, ZeroDivisionError, KeyError, NotImplementedError, OverflowError)


def outcome(case: Case) -> tuple[str, str]:
    """``("clear" | "unclear" | "silent", detail)`` for one case."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case.call()
    except Exception as e:  # noqa: BLE001 - the probe classifies every error
        text = f"{type(e).__name__}: {e}"
        if isinstance(e, RAW) or not isinstance(e, case.errors):
            return "unclear", text
        import re

        if re.search(case.match, str(e)) is None or "too many values to unpack" in str(e):
            return "unclear", text
        return "clear", text
    said = "; ".join(f"{w.category.__name__}: {w.message}" for w in caught)
    return "silent", f"returned without an error{' (warned: ' + said + ')' if said else ''}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error(case: Case) -> None:
    kind, detail = outcome(case)
    assert kind == "clear", f"{case.id}: {kind}: {detail}"


def test_probe_cases_are_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids)
    assert len(CASES) >= 100


def main() -> int:
    counts = {"clear": 0, "unclear": 0, "silent": 0}
    for case in CASES:
        kind, detail = outcome(case)
        counts[kind] += 1
        if kind != "clear" or "-v" in sys.argv:
            print(f"{kind:8s} {case.id}: {detail[:200]}")
    print(f"{len(CASES)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0 if counts["clear"] == len(CASES) else 1


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
