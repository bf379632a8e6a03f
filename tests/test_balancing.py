"""Balancers against hand-computed values of their papers' formulas (and torchjd's versions
where it has them), the gradient-method surrogate, checkpointed state and the config checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from runtime.balancing import (
    DWA,
    FAMO,
    Aggregate,
    GeometricMean,
    GradNorm,
    RandomWeighting,
    Static,
    StepContext,
    Uncertainty,
    check_run_config,
)

TASKS = ["a", "b", "c"]
ALL = torch.arange(3)


def ctx(step: int = 0, shared=(), others=()) -> StepContext:
    return StepContext(shared=list(shared), others=list(others), step=step)


def bound(balancer, model: nn.Module | None = None):
    balancer.bind(TASKS, model or nn.Linear(1, 1))
    return balancer


def test_static_weights_and_defaults():
    b = bound(Static({"a": 2.0, "c": 0.5}))
    values = torch.tensor([1.0, 2.0, 4.0])
    assert b.loss(values, ALL, ctx()).item() == pytest.approx(2 * 1 + 2 + 0.5 * 4)
    # a per-dataset step with only task b
    assert b.loss(torch.tensor([3.0]), torch.tensor([1]), ctx()).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown tasks"):
        bound(Static({"zz": 1.0}))


def test_uncertainty_is_kendalls_formula_and_matches_torchjd():
    from torchjd.scalarization import UW

    b = bound(Uncertainty())
    s = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        b.log_var.copy_(s)
    values = torch.tensor([1.5, 0.2, 3.0])
    # Kendall et al.: sum_i 1 / (2 sigma_i^2) L_i + log sigma_i, with s_i = log sigma_i^2
    want = sum(
        1 / (2 * math.exp(si)) * li + 0.5 * si
        for si, li in zip(s.tolist(), values.tolist(), strict=True)
    )
    got = b.loss(values, ALL, ctx())
    assert got.item() == pytest.approx(want, rel=1e-6)
    uw = UW(3)
    with torch.no_grad():
        uw.log_var.copy_(s)
    assert got.item() == pytest.approx(uw(values).item(), rel=1e-6)
    assert b.weights.tolist() == pytest.approx([0.5 * math.exp(-x) for x in s.tolist()])
    # subset step: only the present tasks' terms
    sub = b.loss(torch.tensor([2.0]), torch.tensor([2]), ctx())
    assert sub.item() == pytest.approx(0.5 * math.exp(-2.0) * 2.0 + 1.0, rel=1e-6)
    got.backward()
    assert b.log_var.grad is not None  # learned by the run's optimizer


def test_dwa_uses_the_ratio_of_the_two_previous_epoch_means():
    from torchjd.scalarization import DWA as TorchjdDWA

    b, ref = bound(DWA(temperature=2.0)), TorchjdDWA(temperature=2.0)
    epochs = [
        [torch.tensor([2.0, 1.0, 4.0]), torch.tensor([4.0, 1.0, 2.0])],
        [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 0.5, 2.0])],
    ]
    for batches in epochs:
        for values in batches:
            b.loss(values, ALL, ctx())
            ref(values)
            assert b.weights.tolist() == [1.0, 1.0, 1.0]  # uniform for two epochs
        # the run hands over each epoch's means (runtime.step_stats); torchjd keeps its own
        b.epoch_losses(torch.stack(batches).mean(dim=0))
        ref.step()
    means = [[3.0, 1.0, 3.0], [1.5, 0.75, 1.5]]
    rates = [n / o for n, o in zip(means[1], means[0], strict=True)]
    expo = [math.exp(r / 2.0) for r in rates]
    want = [3 * e / sum(expo) for e in expo]
    values = torch.tensor([1.0, 2.0, 3.0])
    got = b.loss(values, ALL, ctx())
    assert b.weights.tolist() == pytest.approx(want, rel=1e-6)
    assert got.item() == pytest.approx(
        sum(w * v for w, v in zip(want, [1.0, 2.0, 3.0], strict=True))
    )
    assert got.item() == pytest.approx(ref(values).item(), rel=1e-6)
    # the weights hold for the whole epoch; a step adds nothing to the balancer's state
    state = {k: v.clone() for k, v in b.state_dict().items()}
    b.loss(torch.tensor([9.0, 1.0, 5.0]), ALL, ctx())
    assert b.weights.tolist() == pytest.approx(want, rel=1e-6)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state.items())
    # a task absent from a whole epoch keeps its previous mean (ratio 1)
    b.epoch_losses(torch.tensor([0.75, float("nan"), 3.0]))
    rates = [0.75 / 1.5, 1.0, 3.0 / 1.5]
    expo = [math.exp(r / 2.0) for r in rates]
    assert b.current.tolist() == pytest.approx([3 * e / sum(expo) for e in expo], rel=1e-6)


def test_random_weighting_draws_softmax_of_normals_from_its_own_generator():
    b = bound(RandomWeighting(seed=7))
    values = torch.tensor([1.0, 2.0, 3.0])
    gen = torch.Generator().manual_seed(7)
    before = torch.get_rng_state()
    for _ in range(3):
        z = torch.randn(3, generator=gen)
        lam = [math.exp(x) / sum(math.exp(y) for y in z.tolist()) for x in z.tolist()]
        got = b.loss(values, ALL, ctx())
        assert b.weights.tolist() == pytest.approx(lam, rel=1e-6)
        assert got.item() == pytest.approx(
            sum(w * v for w, v in zip(lam, [1.0, 2.0, 3.0], strict=True))
        )
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left alone
    state = b.state_dict()
    again = bound(RandomWeighting(seed=0))
    again.load_state_dict(state)
    b.loss(values, ALL, ctx())
    again.loss(values, ALL, ctx())
    assert torch.equal(b.weights, again.weights)


def test_geometric_mean_matches_gls_and_torchjd():
    from torchjd.scalarization import GeometricMean as TorchjdGM

    b = bound(GeometricMean())
    values = torch.tensor([0.5, 2.0, 8.0])
    got = b.loss(values, ALL, ctx())
    assert got.item() == pytest.approx((0.5 * 2.0 * 8.0) ** (1 / 3), rel=1e-6)
    assert got.item() == pytest.approx(TorchjdGM()(values).item(), rel=1e-6)
    assert b.weights.tolist() == pytest.approx([got.item() / (3 * v) for v in [0.5, 2.0, 8.0]])


def test_famo_loss_gradient_and_logit_update():
    b = bound(FAMO(lr=0.025, weight_decay=0.0))
    values = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    total = b.loss(values, ALL, ctx())
    z = [1 / 3] * 3  # softmax(0)
    c = 1 / sum(zi / v for zi, v in zip(z, [1.0, 2.0, 4.0], strict=True))
    want = c * sum(zi * math.log(v + 1e-8) for zi, v in zip(z, [1.0, 2.0, 4.0], strict=True))
    assert total.item() == pytest.approx(want, rel=1e-6)
    total.backward()
    # d/dL_i = c z_i / L_i: a convex combination of the task gradients
    assert values.grad.tolist() == pytest.approx(
        [c * zi / v for zi, v in zip(z, [1, 2, 4], strict=True)]
    )
    assert values.grad.sum().item() == pytest.approx(1.0)
    after = torch.tensor([0.5, 1.9, 4.0])
    b.after_step(after)
    delta = [math.log(1.0 / 0.5), math.log(2.0 / 1.9), 0.0]
    grad = [
        zi * (d - sum(zj * dj for zj, dj in zip(z, delta, strict=True)))
        for zi, d in zip(z, delta, strict=True)
    ]
    # Adam's first step moves each logit by lr against the sign of its gradient
    assert b.famo._w.tolist() == pytest.approx(
        [-0.025 * math.copysign(1, g) for g in grad], rel=1e-4
    )
    # its state (logits, Adam moments) round-trips through the state_dict
    again = bound(FAMO(lr=0.025, weight_decay=0.0))
    again.load_state_dict(b.state_dict())
    for m in (b, again):
        m.loss(torch.tensor([0.6, 1.0, 3.0]), ALL, ctx())
        m.after_step(torch.tensor([0.5, 0.9, 3.1]))
    assert torch.equal(b.famo._w, again.famo._w)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 3)
        self.decoders = nn.ModuleDict({t: nn.Linear(3, 1) for t in TASKS})

    def losses(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.encoder(x))
        return torch.stack(
            [(self.decoders[t](h) ** 2).mean() * (i + 1) for i, t in enumerate(TASKS)]
        )


def test_gradnorm_weight_update_follows_the_paper():
    model = TwoHeads()
    b = bound(GradNorm(alpha=1.5, lr=0.1), model)
    assert b.layer == "encoder.weight"  # last shared weight matrix by default
    x = torch.randn(8, 4)
    values = model.losses(x)
    norms = [
        torch.autograd.grad(v, model.encoder.weight, retain_graph=True)[0].norm().item()
        for v in values
    ]
    total = b.loss(values, ALL, ctx())
    assert total.item() == pytest.approx(values.sum().item(), rel=1e-6)  # w(0) = 1
    # step 0: r_i = 1, target = mean_j G_j; Adam's first step is lr * sign of the gradient
    # sign(G_i - target) * ||grad_W L_i||, then renormalised to sum to 3
    target = sum(norms) / 3
    raw = [1 - 0.1 * math.copysign(1, n - target) for n in norms]
    want = [3 * r / sum(raw) for r in raw]
    assert b.task_weights.tolist() == pytest.approx(want, rel=1e-5)


def test_aggregate_gives_shared_the_aggregation_and_heads_their_own_gradient():
    from torchjd.aggregation import MGDA

    model = TwoHeads()
    b = bound(Aggregate(MGDA()), model)
    x = torch.randn(8, 4)
    values = model.losses(x)
    shared = [model.encoder.weight, model.encoder.bias]
    heads = list(model.decoders.parameters())
    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(v, shared, retain_graph=True)])
        for v in values
    ]
    want_shared = MGDA()(torch.stack(rows))
    want_heads = torch.autograd.grad(values.sum(), heads, retain_graph=True)
    surrogate = b.loss(values, ALL, ctx(shared=shared, others=heads))
    surrogate.backward()
    got_shared = torch.cat([p.grad.flatten() for p in shared])
    torch.testing.assert_close(got_shared, want_shared, rtol=1e-5, atol=1e-6)
    for p, g in zip(heads, want_heads, strict=True):
        torch.testing.assert_close(p.grad, g)
    cos = b.epoch_end()
    unit = torch.nn.functional.normalize(torch.stack(rows), dim=1)
    assert cos["train/grad_cos/a~b"].item() == pytest.approx((unit[0] @ unit[1]).item(), rel=1e-5)


def test_aggregate_saves_torchjd_state_kept_outside_state_dict():
    from torchjd.aggregation import GradVac

    model = TwoHeads()
    b = bound(Aggregate(GradVac(), seed=3), model)
    shared = [model.encoder.weight, model.encoder.bias]
    heads = list(model.decoders.parameters())
    b.loss(model.losses(torch.randn(8, 4)), ALL, ctx(shared=shared, others=heads))
    state = b.state_dict()
    again = bound(Aggregate(GradVac(), seed=3), model)
    again.load_state_dict(state)
    inner = [m for m in b.aggregator.modules() if hasattr(m, "_phi_t")]
    inner_again = [m for m in again.aggregator.modules() if hasattr(m, "_phi_t")]
    assert inner
    assert inner[0]._phi_t is not None
    torch.testing.assert_close(inner_again[0]._phi_t, inner[0]._phi_t)
    x = torch.randn(8, 4)
    outs = []
    for m in (b, again):
        model.zero_grad()
        m.loss(model.losses(x), ALL, ctx(shared=shared, others=heads)).backward()
        outs.append(model.encoder.weight.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_warmup_sums_and_needs_all_tasks_is_enforced():
    b = bound(Uncertainty(warmup_steps=2))
    with torch.no_grad():
        b.log_var.fill_(1.0)
    values = torch.tensor([1.0, 2.0, 3.0])
    assert b.loss(values, ALL, ctx(step=1)).item() == pytest.approx(6.0)
    assert b.loss(values, ALL, ctx(step=2)).item() != pytest.approx(6.0)
    with pytest.raises(ValueError, match="all_datasets"):
        bound(FAMO()).loss(torch.tensor([1.0]), torch.tensor([0]), ctx())


def _config(balancer: dict, mode: str = "random_cycle", accumulate: int = 1) -> dict:
    return {
        "model": {"init_args": {"balancer": balancer}},
        "trainer": {"accumulate_grad_batches": accumulate},
        "data": {"init_args": {"sample_mode": mode, "data_modules": {"x": {}, "y": {}}}},
    }


def test_config_checks_name_the_problem():
    assert check_run_config({"model": {"init_args": {}}}) is None
    assert (
        check_run_config(_config({"class_path": "runtime.balancing.Uncertainty"}, accumulate=4))
        is None
    )
    famo = {"class_path": "runtime.balancing.FAMO"}
    assert "sample_mode: all_datasets" in check_run_config(_config(famo))
    assert check_run_config(_config(famo, mode="all_datasets")) is None
    assert "accumulate_grad_batches=2" in check_run_config(_config(famo, "all_datasets", 2))
    bad = {"class_path": "runtime.balancing.DWA", "init_args": {"temperature": -1}}
    assert "temperature" in check_run_config(_config(bad))


def test_missing_solver_is_a_config_error_naming_the_extra(monkeypatch):
    import torchjd._mixins as mixins

    real = mixins.find_spec
    monkeypatch.setattr(
        mixins, "find_spec", lambda name: None if name == "quadprog" else real(name)
    )
    spec = {
        "class_path": "runtime.balancing.Aggregate",
        "init_args": {"aggregator": {"class_path": "torchjd.aggregation.UPGrad"}},
    }
    message = check_run_config(_config(spec, mode="all_datasets"))
    assert 'pip install "mtl-toolkit[balancing]"' in message
    assert "quadprog" in message
