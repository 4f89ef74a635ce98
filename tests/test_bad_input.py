"""Bad input gets a clear error: shapes, NaNs, unknown names and options, tolerances, dtypes, devices."""

import pytest
import torch

import deqlib
from deqlib import DEQ, MLPCell, anderson, config, fixed_point, mlp_classifier


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=16)


@pytest.fixture
def deq():
    return DEQ(MLPCell(8, activation="tanh", norm=False), solver="anderson")


def test_wrong_image_shape(model):
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, 8, 8\), got \(2, 1, 28, 28\)"):
        model(torch.rand(2, 1, 28, 28))


def test_missing_batch_dimension(model):
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(1, 8, 8))


def test_nan_input_to_classifier(model):
    x = torch.rand(2, 1, 8, 8)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(x)


def test_nan_input_to_deq(deq):
    x = torch.randn(2, 8)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        deq(x)


def test_pixels_outside_unit_interval(model):
    with pytest.raises(ValueError, match=r"pixels must be in \[0, 1\]"):
        model(torch.rand(2, 1, 8, 8) * 255)


def test_integer_images(model):
    with pytest.raises(TypeError, match="float images"):
        model(torch.randint(0, 2, (2, 1, 8, 8)))


def test_wrong_injection_width_for_mlp_cell(deq):
    with pytest.raises(ValueError, match=r"expected an injection of shape \(N, 8\)"):
        deq(torch.randn(2, 5))


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown solver 'newton'; available: anderson, broyden, fixed_point"):
        DEQ(MLPCell(4), solver="newton")


def test_unknown_solver_option():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['memroy'\] for solver 'broyden'"):
        DEQ(MLPCell(4), solver="broyden", memroy=5)
    with pytest.raises(TypeError):
        fixed_point(lambda z: z, torch.zeros(1, 2), damping=0.5)


def test_unknown_gradient():
    with pytest.raises(ValueError, match="unknown grad 'implicit'"):
        DEQ(MLPCell(4), grad="implicit")


@pytest.mark.parametrize("tol", [0.0, -1e-3, float("nan")])
def test_non_positive_tol(tol):
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        DEQ(MLPCell(4), tol=tol)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        anderson(lambda z: z, torch.zeros(1, 2), tol=tol)


def test_bad_max_iter_and_stop_mode():
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        fixed_point(lambda z: z, torch.zeros(1, 2), max_iter=0)
    with pytest.raises(ValueError, match="unknown stop_mode 'relative'; expected one of"):
        fixed_point(lambda z: z, torch.zeros(1, 2), stop_mode="relative")


def test_z0_of_wrong_dtype(deq):
    x = torch.randn(2, 8)
    with pytest.raises(TypeError, match="z0 has dtype torch.float64, the input has dtype torch.float32"):
        deq(x, z0=torch.zeros(2, 8, dtype=torch.float64))


def test_z0_of_wrong_shape(deq):
    with pytest.raises(ValueError, match=r"z0 has shape \(2, 7\), the state has shape \(2, 8\)"):
        deq(torch.randn(2, 8), z0=torch.zeros(2, 7))


def test_z0_on_wrong_device(deq):
    x = torch.randn(2, 8)
    z0 = torch.zeros(2, 8, device="meta")
    with pytest.raises(ValueError, match="z0 is on meta, the input is on cpu"):
        deq(x, z0=z0)


def test_cell_that_changes_the_shape():
    with pytest.raises(ValueError, match=r"f changed the state's shape from \(2, 3\) to \(2, 4\)"):
        fixed_point(lambda z: torch.zeros(2, 4), torch.zeros(2, 3))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="mnist5k"):
        deqlib.data.load("mnist6k")


def test_unknown_mode(monkeypatch):
    monkeypatch.setenv("DEQLIB_MODE", "turbo")
    with pytest.raises(ValueError, match="\\$DEQLIB_MODE: unknown mode 'turbo'"):
        config.get_mode()
    monkeypatch.setenv("DEQLIB_MODE", "FULL")
    assert config.get_mode() == "full"
    assert config.choose(fast=1, full=2, mode="fast") == 1


def test_unavailable_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        config.select_device("cuda")


def test_bad_classifier_builders():
    with pytest.raises(ValueError, match="unknown classifier kind 'rnn'"):
        deqlib.classifier_for(deqlib.data.load("digits", "test"), kind="rnn")
    with pytest.raises(ValueError, match="unknown activation 'sigmoidal'"):
        MLPCell(4, activation="sigmoidal")


def test_convergence_counts_and_report_reject_bad_arguments(deq):
    from deqlib.diagnostics import convergence_report

    with pytest.raises(ValueError, match="ConvergenceCounts.add: tag must be 'forward' or 'backward', got 'solve'"):
        deq.convergence.add("solve", deq.solve(torch.randn(2, 8))[1])
    with pytest.raises(TypeError, match="ConvergenceCounts.attach: expected ConvergenceCounts, got dict"):
        deq.convergence.attach({})
    with pytest.raises(TypeError, match="convergence_report: model must be an nn.Module, got ConvergenceCounts"):
        with convergence_report(deq.convergence):
            pass
    with pytest.raises(ValueError, match=r"DEQ \(backward\): max_iter must be an int >= 1"):
        DEQ(MLPCell(8), backward_max_iter=0)
