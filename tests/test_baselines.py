"""deqlib.baselines: the explicit, weight-untied network of a DEQ's parameter count (chapter 8's baseline)."""

import pytest
import torch

from deqlib import cells, data, zoo
from deqlib.baselines import ExplicitClassifier, explicit_classifier_for, matched_size, n_parameters


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train")


def test_forward_is_the_untied_layers_unrolled_from_the_first_step(digits):
    torch.manual_seed(0)
    model = explicit_classifier_for(digits, depth=3, width=12)
    x = digits.images[:5]
    u = model.injection(model.normalize(x))
    z = torch.tanh(u)  # the DEQ's first step from z = 0
    for layer in model.layers:
        z = torch.tanh(layer.linear(z) + u)
    torch.testing.assert_close(model(x), model.head(z))
    assert model.depth == 3 and len(model.states(x)) == 3


def test_every_layer_has_its_own_weights_and_gets_a_gradient(digits):
    torch.manual_seed(0)
    model = explicit_classifier_for(digits, depth=4, width=10)
    weights = [layer.linear.weight for layer in model.layers]
    assert len({w.data_ptr() for w in weights}) == 4  # untied
    model(digits.images[:8]).logsumexp(1).sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_matched_width_is_the_nearest_parameter_count(digits):
    deq = n_parameters(cells.classifier_for(digits, "mlp", width=40))
    width = matched_size(digits, "mlp", deq_size=40, depth=3)

    def gap(w):
        return abs(n_parameters(explicit_classifier_for(digits, depth=3, width=w)) - deq)

    assert all(gap(width) <= gap(w) for w in range(1, 120))
    assert matched_size(digits, "mlp", deq_size=40, depth=1) == 40  # one untied layer is the DEQ's parameter set


def test_the_conv_baseline_unrolls_the_conv_cell_at_a_matched_size(digits):
    deq = cells.classifier_for(digits, "conv", channels=16, downsample=1)
    channels = matched_size(digits, "conv", deq_size=16, depth=2, downsample=1)
    torch.manual_seed(0)
    model = explicit_classifier_for(digits, "conv", depth=2, channels=channels, downsample=1)
    assert channels % 8 == 0 and all(isinstance(layer, cells.ConvCell) for layer in model.layers)
    x = digits.images[:3]
    u = model.injection(model.normalize(x))
    z = model.layers[0].norm(torch.relu(u))  # f(0, u): the first step from zero, its own GroupNorm
    torch.testing.assert_close(model.states(x)[0], model.layers[0](z, u))
    assert model(x).shape == (3, 10)
    gaps = [
        abs(
            n_parameters(explicit_classifier_for(digits, "conv", depth=2, channels=c, downsample=1)) - n_parameters(deq)
        )
        for c in (8, 16, 24, 32)
    ]
    assert gaps[channels // 8 - 1] == min(gaps)


def test_the_zoo_baseline_matches_the_zoo_deq_in_size():
    mnist = data.load("mnist5k", "train")
    recipe = zoo.get("mnist5k-mlp-explicit-pgdat")
    deq_width, depth = zoo.get("mnist5k-mlp-pgdat").model["width"], recipe.architecture["depth"]
    assert recipe.model["width"] == matched_size(mnist, "mlp", deq_size=deq_width, depth=depth)
    conv = zoo.get("cifar10-conv-explicit-pgdat")
    cifar_like = type("D", (), {"image_shape": (3, 32, 32), "num_classes": 10, "mean": (0.5,) * 3, "std": (0.5,) * 3})
    deq_channels = zoo.get("cifar10-conv-pgdat").model["channels"]
    assert conv.model["channels"] == matched_size(cifar_like, "conv", deq_size=deq_channels, depth=depth)
    explicit, deq = zoo.load("mnist5k-mlp-explicit-pgdat"), zoo.load("mnist5k-mlp-pgdat")
    assert isinstance(explicit, ExplicitClassifier)
    assert abs(n_parameters(explicit) - n_parameters(deq)) / n_parameters(deq) < 0.01


def test_bad_input_is_refused(digits):
    model = explicit_classifier_for(digits, depth=2, width=8)
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(2, 1, 9, 9))
    with pytest.raises(TypeError):
        model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError):
        model(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="depth"):
        explicit_classifier_for(digits, depth=0, width=8)
    with pytest.raises(ValueError, match="at least one layer"):
        ExplicitClassifier(
            torch.nn.Flatten(),
            torch.nn.Tanh(),
            [],
            torch.nn.Linear(8, 10),
            image_shape=(1, 8, 8),
            mean=(0.0,),
            std=(1.0,),
        )
