"""Tests for deqlib.defenses.entropy_reduction, deqlib.defenses.entropy_gradients and deqlib.attacks.adaptive: input
entropy reduction, the gradients it hands an attacker (BPDA by default, checked against hand computations at the
purified point and finite differences), and its four adaptive attacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _digits_deq import (  # noqa: F401 (the fixtures)
    digits_fixture,
    trained_fixture,
    trained_fp_fixture,
    unrolled_input_gradient,
)

from deqlib.defenses import ATTACK_EPS, EntropyReductionDefense
from deqlib.defenses.entropy_gradients import smooth_sign
from deqlib.losses import entropy

TOL = 1e-6


# ---------------------------------------------------------------------------------------------- entropy reduction


def test_entropy_reduction_lowers_entropy_and_stays_in_the_ball(digits, trained):
    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=5, rounds=3, eps=0.1, eta=0.025)
    logits = defense(x)
    assert logits.shape == (len(x), 10)
    x_t = defense.last_inputs
    assert x_t.min() >= 0 and x_t.max() <= 1
    assert (x_t - x).abs().max() <= 0.1 + TOL
    assert (x_t - x).abs().max() > 0.05  # the input did move
    # The same loop with eps = 0 never moves the input: the undefended prediction at the same depth.
    plain = EntropyReductionDefense(trained, T_f=2, R=5, rounds=3, eps=0.0, eta=0.025)
    logits0 = plain(x)
    assert torch.equal(plain.last_inputs, x)
    h, h0 = entropy(logits), entropy(logits0)
    assert h.mean() < 0.7 * h0.mean()
    assert (h <= h0 + 1e-4).float().mean() >= 0.9
    # The recorded entropy falls along each round's input steps.
    trace = defense.last_entropy
    assert trace.shape == (3, 6, len(x))
    assert (trace.mean(-1)[:, -1] <= trace.mean(-1)[:, 0] + 1e-6).all()
    assert torch.allclose(trace[-1, -1], h)
    # Clean accuracy does not collapse.
    assert (logits.argmax(1) == y).float().mean() >= (logits0.argmax(1) == y).float().mean() - 0.1


def test_entropy_reduction_is_per_sample(digits, trained):
    """The batch-mean entropy couples samples only by 1/B, which does not change sign(grad): batch == one by one."""
    _, _, (x, _) = digits
    model = trained.double()
    try:
        xd = x[:6].double()
        defense = EntropyReductionDefense(model, T_f=2, R=4, rounds=2, eps=0.1, eta=0.03)
        batch = defense(xd)
        x_batch = defense.last_inputs
        for i in range(len(xd)):
            single = defense(xd[i : i + 1])
            assert torch.allclose(single, batch[i : i + 1], atol=1e-10)
            assert torch.equal(defense.last_inputs, x_batch[i : i + 1])
    finally:
        trained.float()


def _double(model):
    """The cached fixture model in float64 (restored by the caller with .float())."""
    return model.double()


def _fd_input_jacobian(defense, x, delta=1e-7):
    """The Jacobian d x_T / d x of the purification by forward differences, per sample: (N, D, D) in float64.

    Each pixel is moved inside [0, 1] (up, or down where it is 1), so every perturbed image is a valid input."""
    n, d = x.shape[0], x[0].numel()
    with torch.no_grad():
        defense.defend(x)
        base = defense.last_inputs.reshape(n, 1, d)
        step = torch.where(x.reshape(n, d) < 1, delta, -delta)  # (n, d): the move of each pixel
        moved = x.reshape(n, 1, d).repeat(1, d, 1) + torch.diag_embed(step)  # (n, d, d): row i moves pixel i
        defense.defend(moved.reshape(n * d, *x.shape[1:]))
        out = defense.last_inputs.reshape(n, d, d)
    return ((out - base) / step.unsqueeze(-1)).transpose(1, 2)  # [b, j, i] = d x_T[j] / d x[i]


def _bpda_by_hand(model, x, y, out, x_T, mask):
    """d CE(out, y) / dx for BPDA: the model's input gradient at the purified x_T (the outer gradient taken at the
    defended logits, straight-through), masked by the purification's Jacobian."""
    w = (torch.softmax(out.detach(), 1) - F.one_hot(y, out.shape[1]).to(out.dtype)) / len(y)
    xp = x_T.clone().requires_grad_()
    (g_at_T,) = torch.autograd.grad((model(xp) * w).sum(), xp)
    xc = x.clone().requires_grad_()
    (g_at_x,) = torch.autograd.grad((model(xc) * w).sum(), xc)
    return mask * g_at_T, g_at_T, g_at_x


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_forward_carries_the_bpda_gradient_at_the_purified_point(digits, trained):
    """Finding 3: differentiating the defence gives BPDA (the model at x_T, zero where the [0, 1] box clipped),
    not the undefended model's gradient at x (the old forward: every attack on it was a transfer attack)."""
    _, _, (x, y) = digits
    model = _double(trained)
    try:
        xd, yd = x[:6].double(), y[:6]
        defense = EntropyReductionDefense(model, T_f=2, R=10, rounds=4, eps=0.1, eta=0.025)
        assert defense.gradient == "bpda"
        xr = xd.clone().requires_grad_()
        out = defense(xr)
        assert torch.equal(out.detach(), defense.defend(xd))  # the values are the defence's
        (g,) = torch.autograd.grad(F.cross_entropy(out, yd), xr)
        x_T = defense.last_inputs
        jac = _fd_input_jacobian(defense, xd)
        diag = torch.diagonal(jac, dim1=1, dim2=2)
        assert (jac - torch.diag_embed(diag)).abs().max() < 1e-6  # diagonal
        assert ((diag - diag.round()).abs() < 1e-6).all()  # 0 or 1 per pixel
        mask = diag.round().reshape(xd.shape)
        assert 0.1 < (mask == 0).double().mean() < 0.9  # the box clips a good share of the digits' pixels
        defense.defend(xd)
        assert torch.equal(defense.last_input_jacobian, mask)  # what the defence records
        g_hand, g_at_T, g_at_x = _bpda_by_hand(model, xd, yd, out, x_T, mask)
        assert torch.allclose(g, g_hand, rtol=1e-6, atol=1e-12)
        # ... and none of the wrong ones: the undefended gradient at x, BPDA at the clean input, no mask
        assert _rel(g_at_x, g) > 0.1 and _rel(mask * g_at_x, g) > 0.1 and _rel(g_at_T, g) > 0.05
    finally:
        trained.float()


def test_the_loop_gradient_is_exact_with_input_steps(digits, trained_fp):
    """With R > 0 (and a fixed-point solver) the "loop" gradient is the exact gradient of the defended logits
    almost everywhere: it matches forward differences in random directions, per sample."""
    _, _, (x, y) = digits
    model = _double(trained_fp)
    try:
        xd, yd = x[:8].double(), y[:8]
        defense = EntropyReductionDefense(model, T_f=2, R=3, rounds=2, eps=0.1, eta=0.03)
        xr = xd.clone().requires_grad_()
        out = defense.forward_with(xr, "loop")
        assert torch.equal(out.detach(), defense.defend(xd))
        assert (defense.last_input_jacobian == 0).any()  # the box clips: a wrong mask would show
        loss = F.cross_entropy(out, yd, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), xr)  # per sample: sample b's loss depends on x_b only
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(xd.shape, generator=gen, dtype=xd.dtype)
            v = torch.where(xd <= 0, v.abs(), torch.where(xd >= 1, -v.abs(), v))  # stay inside [0, 1]
            delta = 1e-7
            with torch.no_grad():
                moved = F.cross_entropy(defense.defend(xd + delta * v), yd, reduction="none")
            fd = (moved - loss.detach()) / delta
            assert torch.allclose((g * v).flatten(1).sum(1), fd, rtol=1e-4, atol=1e-6)
    finally:
        trained_fp.float()


def test_the_loop_gradient_without_input_steps_is_the_unrolled_one(digits, trained_fp):
    """With R = 0 there is nothing to approximate for a fixed-point model: the gradient of head(f^(T_f*rounds+1))."""
    _, _, (x, y) = digits
    model = trained_fp
    defense = EntropyReductionDefense(model, T_f=2, R=0, rounds=3, eps=0.1, eta=0.03)
    g_ref = unrolled_input_gradient(model, x, y, 7)
    for gradient in ("loop", "loop_smooth"):  # no signed step, so no difference
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(defense.forward_with(xr, gradient), y), xr)
        assert torch.allclose(g, g_ref, atol=1e-6)


def test_smooth_sign_is_the_sign_with_a_tanh_backward():
    g = torch.randn(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    s = smooth_sign(g)
    assert torch.equal(s, g.sign())
    w = torch.randn_like(g)
    (back,) = torch.autograd.grad((s * w).sum(), g)
    tau = g.detach().abs().flatten(1).mean(1).view(-1, 1, 1, 1)
    assert torch.allclose(back, w * (1 - torch.tanh(g.detach() / tau) ** 2) / tau)


def test_the_smooth_loop_gradient_follows_the_signed_steps(digits, trained_fp):
    """ "loop_smooth" differentiates the signed step through its own gradient ∇H: for one round and one input step,
    by hand (fixed-point model: the defence's two solver steps are two plain steps)."""
    _, _, (x, y) = digits
    model = trained_fp.double()
    try:
        xd, yd, eps, eta = x[:6].double(), y[:6], 0.1, 0.03
        defense = EntropyReductionDefense(model, T_f=2, R=1, rounds=1, eps=eps, eta=eta)
        xr = xd.clone().requires_grad_()
        out = defense.forward_with(xr, "loop_smooth")
        assert torch.equal(out.detach(), defense.defend(xd))
        (g,) = torch.autograd.grad(F.cross_entropy(out, yd), xr)
        # by hand
        xh = xd.clone().requires_grad_()
        cell, u = model.deq.cell, model.inject(xh)
        z = cell(cell(torch.zeros(len(xd), *cell.state_shape(u)[1:], dtype=xd.dtype), u), u)
        xc = xh.clone()
        h = entropy(model.head(cell(z, model.inject(xc)))).mean()
        (gh,) = torch.autograd.grad(h, xc, create_graph=True)
        a = xh - eta * smooth_sign(gh)
        lo, hi = (xh - eps).clamp(min=0), (xh + eps).clamp(max=1)
        x1 = torch.where(a < lo, lo, torch.where(a > hi, hi, a))
        (g_hand,) = torch.autograd.grad(F.cross_entropy(model.head(cell(z, model.inject(x1))), yd), xh)
        assert torch.allclose(g, g_hand, rtol=1e-6, atol=1e-12)
        xl = xd.clone().requires_grad_()
        (g_loop,) = torch.autograd.grad(F.cross_entropy(defense.forward_with(xl, "loop"), yd), xl)
        assert _rel(g_loop, g) > 1e-3  # the second-order path is there
    finally:
        trained_fp.float()


def test_transfer_gradient_is_the_undefended_models_and_only_by_name(digits, trained):
    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=3, rounds=2, eps=0.1, eta=0.03)
    xr = x.clone().requires_grad_()
    out = defense.forward_with(xr, "transfer")
    assert torch.equal(out.detach(), defense.defend(x))
    (g,) = torch.autograd.grad(F.cross_entropy(out, y), xr)
    xb = x.clone().requires_grad_()
    base_logits = trained(xb)
    (g_base,) = torch.autograd.grad(F.cross_entropy(out.detach() + base_logits - base_logits.detach(), y), xb)
    assert torch.allclose(g, g_base, atol=1e-6)
    with pytest.raises(ValueError, match="gradient"):
        EntropyReductionDefense(trained, eps=0.1, eta=0.03, gradient="transfer")  # never the defence's own
    with torch.no_grad():
        for gradient in ("bpda", "loop", "loop_smooth", "transfer", "none"):
            assert not defense.forward_with(xr, gradient).requires_grad


def test_a_refusing_defense_names_the_adaptive_attacks(digits, trained):
    pytest.importorskip("torchattacks")
    from deqlib.attacks import pgd

    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=2, rounds=2, eps=0.1, eta=0.03, gradient="none")
    xr = x[:4].clone().requires_grad_()
    out = defense(xr)  # the values come, without a gradient to take
    assert torch.equal(out.detach(), defense.defend(x[:4]))
    with pytest.raises(RuntimeError, match="refuses to be differentiated.*adaptive_attacks.*'bpda', 'transfer'"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="adaptive_attacks"):
        pgd(defense, 0.1, steps=2)(x[:4], y[:4])


def test_entropy_reduction_default_radii_and_validation(trained, digits):
    train = digits[0]
    d = EntropyReductionDefense(trained, dataset="mnist5k")
    assert d.eps == pytest.approx(0.3) and d.eta == pytest.approx(0.075)
    d = EntropyReductionDefense(trained, dataset="cifar10")
    assert d.eps == pytest.approx(8 / 255) and d.eta == pytest.approx(2 / 255)
    d = EntropyReductionDefense(trained, dataset=train)
    assert d.eps == pytest.approx(ATTACK_EPS["digits"])
    d = EntropyReductionDefense(trained, attack_eps=0.2, eta=0.01)
    assert d.eps == pytest.approx(0.2) and d.eta == 0.01
    assert (d.T_f, d.R, d.rounds) == (2, 10, 4)
    with pytest.raises(ValueError, match="give eps"):
        EntropyReductionDefense(trained)
    with pytest.raises(ValueError, match="no default"):
        EntropyReductionDefense(trained, dataset="imagenet")
    for kwargs in (
        dict(eps=2.0, eta=0.1),
        dict(eps=-0.1, eta=0.1),
        dict(eps=0.1, eta=0.0),
        dict(eps=0.1, eta=0.1, T_f=0),
        dict(eps=0.1, eta=0.1, R=-1),
        dict(eps=0.1, eta=0.1, rounds=0),
    ):
        with pytest.raises(ValueError):
            EntropyReductionDefense(trained, **kwargs)


def test_attacks_on_the_defense_follow_the_bpda_gradient(digits, trained):
    """An attack library run on the defence (here PGD, and AdaptiveEntropyAttack) steps along the BPDA gradient at the
    purified point: one step from x, without random start, is x + α·sign(the hand-computed BPDA gradient)."""
    from deqlib.attacks import AdaptiveEntropyAttack, pgd

    _, _, (x, y) = digits
    model = _double(trained)
    try:
        xd, yd, alpha = x[:6].double(), y[:6], 0.05
        defense = EntropyReductionDefense(model, T_f=2, R=10, rounds=4, eps=0.1, eta=0.025)
        with torch.no_grad():
            out = defense(xd)
        mask = torch.diagonal(_fd_input_jacobian(defense, xd), dim1=1, dim2=2).round().reshape(xd.shape)
        defense.defend(xd)
        g_hand, _, g_at_x = _bpda_by_hand(model, xd, yd, out, defense.last_inputs, mask)
        expected = (xd + alpha * g_hand.sign()).clamp(0, 1)
        for atk in (
            pgd(defense, 0.1, alpha=alpha, steps=1, random_start=False),
            AdaptiveEntropyAttack(defense, 0.1, alpha, steps=1, random_start=False),
        ):
            x_adv = atk(xd, yd)
            assert torch.equal(x_adv, expected), type(atk).__name__
        transfer_step = (xd + alpha * g_at_x.sign()).clamp(0, 1)  # the old forward's step
        assert (transfer_step != expected).double().mean() > 0.2
    finally:
        trained.float()


def test_adaptive_attack_through_the_defense(digits, trained):
    torchattacks = pytest.importorskip("torchattacks")
    from deqlib.attacks.adaptive import AdaptiveEntropyAttack

    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=3, rounds=2, eps=0.1, eta=0.03)
    atk = AdaptiveEntropyAttack(defense, eps=0.15, alpha=0.04, steps=5)
    assert isinstance(atk, torchattacks.attack.Attack) and atk.gradient == "bpda"
    defense.train()
    torch.manual_seed(0)
    x_adv = atk(x, y)
    assert defense.training  # torchattacks restores the mode
    defense.eval()
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.15 + TOL
    with torch.no_grad():
        clean = (defense(x).argmax(1) == y).float().mean()
        robust = (defense(x_adv).argmax(1) == y).float().mean()
    assert robust < clean - 0.2
    with pytest.raises(ValueError, match="eps"):
        AdaptiveEntropyAttack(defense, eps=8, alpha=2, steps=3)
    with pytest.raises(ValueError, match="eot"):
        AdaptiveEntropyAttack(defense, eps=0.1, alpha=0.01, steps=3, eot=0)
    with pytest.raises(ValueError, match="gradient"):
        AdaptiveEntropyAttack(defense, eps=0.1, alpha=0.01, steps=3, gradient="none")
    with pytest.raises(TypeError):
        AdaptiveEntropyAttack(trained, eps=0.1, alpha=0.01, steps=3)


def test_objective_apgd_is_torchattacks_apgd_with_another_loss(digits, trained):
    torchattacks = pytest.importorskip("torchattacks")
    from deqlib.attacks.adaptive import ObjectiveAPGD

    _, _, (x, y) = digits
    x, y = x[:12], y[:12]
    ref = torchattacks.APGD(trained, eps=0.1, steps=6, n_restarts=2, seed=3, loss="ce")(x, y)
    ours = ObjectiveAPGD(
        trained,
        lambda xx, yy: F.cross_entropy(trained(xx), yy, reduction="none"),
        eps=0.1,
        steps=6,
        n_restarts=2,
        seed=3,
    )(x, y)
    assert torch.equal(ours, ref)
    atk = ObjectiveAPGD(trained, lambda xx, yy: xx.sum((1, 2, 3)), eps=0.1)
    with pytest.raises(RuntimeError, match="get_logits"):
        atk.dlr_loss(trained(x), y)  # logits that its get_logits did not return


def test_entropy_aware_loss_by_hand():
    from deqlib.attacks.adaptive import ENTROPY_LAMBDA, entropy_aware_loss

    assert ENTROPY_LAMBDA == 1.0
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])  # the first right, the second wrong
    p = torch.softmax(logits, 1)
    ce = -torch.log(p[torch.arange(2), y])
    h = -(p * p.log()).sum(1)
    loss = entropy_aware_loss(logits, y)
    assert torch.allclose(loss[0], ce[0])  # right: the plain CE (the entropy term would hold the attack back)
    assert torch.allclose(loss[1], ce[1] - h[1])
    assert torch.allclose(loss[1], (p[1] * (logits[1] - logits[1, 0])).sum())  # λ = 1: the weighted logit margin
    assert torch.allclose(entropy_aware_loss(logits, y, 0.5)[1], ce[1] - 0.5 * h[1])


def test_the_defense_declares_four_adaptive_attacks(digits, trained_fp):
    """Contract 3: ``adaptive_attacks(eps, *, norm, preset, seed)`` -> the four APGD attacks with the preset budgets;
    each returns images in the ball ∩ [0, 1] and replaces a sample only by one that fools the DEFENDED model."""
    torchattacks = pytest.importorskip("torchattacks")
    from deqlib.attacks.adaptive import ADAPTIVE_PRESETS, DefenseGradient, ObjectiveAPGD

    _, _, (x, y) = digits
    model = trained_fp
    defense = EntropyReductionDefense(model, T_f=2, R=2, rounds=2, eps=0.1, eta=0.05)
    full = defense.adaptive_attacks(0.1, preset="full", seed=1)
    assert list(full) == ["bpda", "transfer", "full_diff", "entropy_aware"]
    for atk in full.values():
        assert isinstance(atk, torchattacks.APGD)
        assert (atk.steps, atk.n_restarts, atk.eps, atk.norm, atk.seed) == (100, 5, 0.1, "Linf", 1)
    assert ADAPTIVE_PRESETS["reduced"] == {"steps": 20, "n_restarts": 2}
    assert isinstance(full["bpda"].model, DefenseGradient) and full["bpda"].model.gradient == "bpda"
    assert isinstance(full["full_diff"].model, DefenseGradient) and full["full_diff"].model.gradient == "loop_smooth"
    assert isinstance(full["transfer"], ObjectiveAPGD) and isinstance(full["entropy_aware"], ObjectiveAPGD)
    # the objectives: transfer is the undefended CE; entropy-aware the loss of the idle readouts, which for a
    # fixed-point model are head(z_{T_f r + 1}) of plain steps at the unmoved input
    xs, ys = x[:5], y[:5]
    xr = xs.clone().requires_grad_()
    assert torch.allclose(full["transfer"].objective(xr, ys), F.cross_entropy(model(xs), ys, reduction="none"))
    from deqlib.attacks.adaptive import entropy_aware_loss

    u = model.inject(xr)
    z, readouts = torch.zeros(len(xs), *model.deq.cell.state_shape(u)[1:]), []
    for k in range(1, 6):
        z = model.deq.cell(z, u)
        if k in (3, 5):
            readouts.append(entropy_aware_loss(model.head(z), ys))
    ref = torch.stack(readouts).mean(0)
    got = full["entropy_aware"].objective(xr, ys)
    assert torch.allclose(got, ref, atol=1e-6)
    (g,) = torch.autograd.grad(got.sum(), xr, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref.sum(), xr)
    assert torch.allclose(g, g_ref, atol=1e-6)
    # a tiny run of each: in the ball, and a changed sample fools the defence
    xs, ys = x[:10], y[:10]
    with torch.no_grad():
        clean = defense(xs).argmax(1) == ys
    worst = clean.clone()
    for name, atk in defense.adaptive_attacks(0.15, seed=0).items():
        atk.steps, atk.n_restarts = 4, 1
        x_adv = atk(xs, ys)
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - xs).abs().max() <= 0.15 + TOL, name
        changed = (x_adv != xs).flatten(1).any(1)
        with torch.no_grad():
            right = defense(x_adv).argmax(1) == ys
        assert not (changed & right).any(), name
        worst &= right
    assert worst.sum() < clean.sum()
    with pytest.raises(ValueError, match="preset"):
        defense.adaptive_attacks(0.1, preset="huge")
    with pytest.raises(ValueError, match="eps"):
        defense.adaptive_attacks(8)
