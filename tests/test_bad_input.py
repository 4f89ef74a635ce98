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
    with pytest.raises(ValueError, match=r"DEQ: backward_max_iter must be an int >= 1, got 0"):
        DEQ(MLPCell(8), backward_max_iter=0)


# ------------------------------------------------------------------------------------------ issue 16 (models, solvers)


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=0),
            "mlp_classifier: width must be an int >= 1, got 0",
        ),
        (
            lambda: mlp_classifier((1, 8, 8), 0, mean=(0.3,), std=(0.4,)),
            "mlp_classifier: num_classes must be an int >= 2, got 0",
        ),
        (
            lambda: deqlib.conv_classifier((1, 8, 8), 0, mean=(0.3,), std=(0.4,)),
            "conv_classifier: num_classes must be an int >= 2",
        ),
        (
            lambda: deqlib.conv_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), channels=0),
            "conv_classifier: channels must be an int >= 1, got 0",
        ),
        (
            lambda: deqlib.conv_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), groups=0),
            "conv_classifier: groups must be an int >= 1, got 0",
        ),
        (lambda: MLPCell(0), "MLPCell: width must be an int >= 1, got 0"),
        (lambda: deqlib.cells.ConvCell(0), "ConvCell: channels must be an int >= 1, got 0"),
        (lambda: mlp_classifier((1, 8, 8), 10, mean=(0.3,) * 3, std=(0.4,) * 3), r"mean and std need 1 value\(s\)"),
    ],
)
def test_builders_refuse_sizes_that_make_no_model(build, match):
    """Issue 16: width=0 and num_classes=0 built a model (logits of shape (N, 0)); channels=0 was a ZeroDivisionError."""
    with pytest.raises(ValueError, match=match):
        build()


def test_classifier_for_needs_a_data_set():
    """Issue 16: classifier_for(object()) was an AttributeError."""
    with pytest.raises(
        TypeError, match=r"classifier_for: dataset must be an image data set .* object lacks \['image_shape'"
    ):
        deqlib.classifier_for(object())
    with pytest.raises(TypeError, match="classifier_for: dataset must be an image data set .* str lacks"):
        deqlib.classifier_for("digits")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_images_of_another_dtype_are_refused_naming_the_models_dtype(model, dtype):
    """Issue 16: float64 / float16 images passed the input check, then failed with "mat1 and mat2 must have the same
    dtype". deqlib refuses them (it does not convert silently) and names both dtypes and the two fixes."""
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    with pytest.raises(TypeError, match=rf"DEQClassifier: x has dtype {dtype} but the model computes in torch.float32"):
        model(x)
    assert model(x.float()).shape == (2, 10)
    assert model.double()(x.double()).dtype == torch.float64  # or convert the model


def test_deq_input_of_another_dtype_or_device_is_refused(deq):
    with pytest.raises(TypeError, match="DEQ: x has dtype torch.float64 but the cell computes in torch.float32"):
        deq(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="DEQ: x is on meta but the cell is on cpu"):
        deq(torch.randn(2, 8, device="meta"))


@pytest.mark.parametrize(
    "option, value, error, match",
    [
        ("backward_tol", -1, ValueError, "DEQ: backward_tol must be a finite number > 0, got -1"),
        ("backward_tol", "1e-3", TypeError, "DEQ: backward_tol must be a real number"),
        ("backward_max_iter", 0, ValueError, "DEQ: backward_max_iter must be an int >= 1, got 0"),
        ("backward_max_iter", 2.5, TypeError, "DEQ: backward_max_iter must be an int, got float"),
        ("backward_options", "m=5", TypeError, "DEQ: backward_options must be a dict"),
        ("record", "yes", TypeError, "DEQ: record must be True or False"),
    ],
)
def test_deq_refuses_bad_backward_settings_at_construction(option, value, error, match):
    """Issue 16: DEQ(backward_tol=-1) / backward_max_iter=0 were refused naming `tol` / `max_iter`, not the option."""
    with pytest.raises(error, match=match):
        DEQ(MLPCell(4), **{option: value})


def _returns_a_tensor(f, z0, *, max_iter, tol, stop_mode, record):
    return f(z0)


def _returns_a_dict(f, z0, *, max_iter, tol, stop_mode, record):
    return f(z0), {"steps": 1}


@pytest.mark.parametrize("solver, got", [(_returns_a_tensor, "got Tensor"), (_returns_a_dict, r"got \(Tensor, dict\)")])
def test_custom_solver_with_the_wrong_return_names_the_contract(solver, got):
    """Issue 16: a custom solver returning the wrong thing was "too many values to unpack"."""
    contract = (
        r"must return \(z, info\) with z a tensor of the state's shape \(3, 4\) and info a deqlib.solvers.SolverInfo"
    )
    with pytest.raises(TypeError, match=rf"DEQ: the solver '{solver.__name__}' {contract}.*; {got}"):
        DEQ(MLPCell(4), solver=solver)(torch.randn(3, 4))
    backward = DEQ(MLPCell(4), backward_solver=solver)
    with pytest.raises(TypeError, match=rf"DEQ \(IFT backward\): the backward_solver '{solver.__name__}' {contract}"):
        backward(torch.randn(3, 4, requires_grad=True)).sum().backward()


def test_custom_solver_without_the_solver_keywords_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"DEQ: solver '<lambda>' lacks the keyword arguments \['max_iter', 'tol'"):
        DEQ(MLPCell(4), solver=lambda f, z0: (z0, None))
    with pytest.raises(
        TypeError, match=r"DEQ: solver must be a registered solver name \(anderson, broyden, fixed_point"
    ):
        DEQ(MLPCell(4), solver=5)


@pytest.mark.parametrize("n_samples", [0, -2])
def test_jacobian_frobenius_refuses_no_probes(n_samples):
    """Issue 16: n_samples=0 returned NaN and negative counts -0."""
    from deqlib.diagnostics import jacobian_frobenius

    z = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match=rf"jacobian_frobenius: n_samples must be an int >= 1, got {n_samples}"):
        jacobian_frobenius(torch.tanh(z), z, n_samples=n_samples)
    with pytest.raises(ValueError, match="jacobian_frobenius: f_out was not computed from z_in"):
        jacobian_frobenius(torch.randn(2, 3, requires_grad=True) * 2, z)
