"""Module assembler: shapes, the activation-limit guarantee, Improved SemHash and the gate loss."""

from __future__ import annotations

import pytest
import torch

from host.assembler import (
    AssemblerConfig,
    ModuleAssembler,
    gate_loss,
    limit_encoding,
    max_active,
    semhash_gates,
    soft_gates,
    trim_to_limit,
)
from host.errors import ConfigError, GateError

COUNTS = (16, 16, 32, 32, 64, 64, 128, 128)


@pytest.fixture()
def assembler():
    torch.manual_seed(0)
    return ModuleAssembler(AssemblerConfig(vocab_size=18, module_counts=COUNTS, hidden=32, experts=3))


def test_shapes_and_batch_of_requests(assembler):
    tasks = (torch.rand(12, 18) < 0.2).float()
    limits = torch.linspace(0.05, 1.0, 12)
    logits = assembler(tasks, limits)
    assert [t.shape for t in logits] == [(12, d) for d in COUNTS]
    res = assembler.generate(tasks, limits)
    assert [g.shape for g in res.gates] == [(12, d) for d in COUNTS]
    assert all(((g == 0) | (g == 1)).all() for g in res.gates)
    # One batched forward equals one request at a time (eval mode: BN uses running statistics).
    single = assembler.generate(tasks[3:4], limits[3:4])
    assert all(torch.equal(a[3], b[0]) for a, b in zip(res.gates, single.gates, strict=True))
    assert res.request(3)[0].shape == (16,)


def test_limit_guarantee_everywhere(assembler):
    # Push all logits positive so every request must be trimmed.
    with torch.no_grad():
        for g in assembler.gaters:
            g[1].bias.fill_(5.0)
    tasks = (torch.rand(200, 18) < 0.3).float()
    limits = torch.rand(200).clamp(min=1e-3)
    limits[:6] = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.5, 1.0])
    res = assembler.generate(tasks, limits)
    assert torch.all(res.ratios <= limits)
    assert torch.all(res.trimmed[limits < 0.9] > 0)
    # The trim keeps exactly the largest logits.
    flat = torch.cat(res.logits, dim=1)[4]
    kept = torch.cat(res.gates, dim=1)[4].bool()
    assert flat[kept].min() > flat[~kept].max()


def test_max_active_exact():
    total = 480
    for lim in torch.linspace(0.001, 1.0, 997, dtype=torch.float64).float():
        k = int(max_active(lim[None], total))
        assert k / total <= float(lim) and (k + 1) / total > float(lim) - 1e-12


def test_trim_keeps_untrimmed_when_under_limit():
    logits = [torch.tensor([[1.0, -1.0, 2.0, -3.0]])]
    gates, trimmed = trim_to_limit(logits, torch.tensor([1.0]))
    assert gates[0].tolist() == [[1.0, 0.0, 1.0, 0.0]] and trimmed.tolist() == [0]
    gates, trimmed = trim_to_limit(logits, torch.tensor([0.25]))
    assert gates[0].tolist() == [[0.0, 0.0, 1.0, 0.0]] and trimmed.tolist() == [1]


def test_bad_limits_and_shapes(assembler):
    tasks = torch.zeros(2, 18)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="outside \\(0, 1\\]"):
            assembler.generate(tasks, torch.tensor([0.3, bad]))
    with pytest.raises(GateError, match="shape"):
        assembler(torch.zeros(2, 17), torch.tensor([0.3, 0.3]))


def test_limit_encoding_distinguishes_limits():
    enc = limit_encoding(torch.tensor([0.1, 0.11, 0.5]), 16)
    assert enc.shape == (3, 16)
    assert (enc[0] - enc[1]).abs().max() > 0.05 and (enc[0] - enc[2]).abs().max() > 0.5


def test_semhash_straight_through_gradient():
    w = torch.tensor([[-2.0, -0.1, 0.3, 4.0], [-2.0, -0.1, 0.3, 4.0]], requires_grad=True)
    use_hard = torch.tensor([True, False])
    g = semhash_gates(w, use_hard)
    assert g[0].tolist() == [0.0, 0.0, 1.0, 1.0]  # exact hard values
    assert torch.allclose(g[1], soft_gates(w[1].detach()))
    g.sum().backward()
    # The hard row's gradient is the soft gate's gradient (straight-through), identical for both rows.
    w2 = w.detach().clone().requires_grad_(True)
    soft_gates(w2).sum().backward()
    assert torch.allclose(w.grad[0], w2.grad[0]) and torch.allclose(w.grad[1], w2.grad[1])
    assert w.grad[0, 1] > 0  # non-zero although the hard gate is flat
    assert w.grad[0, 3] == 0  # soft gate saturates at 1 for large logits (clamp)


def test_gate_loss_only_above_limit():
    gates = [torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)]
    limits = torch.tensor([0.6, 0.5])
    loss = gate_loss(gates, limits)
    assert torch.isclose(loss, torch.tensor((0.0 + 0.25) / 2))
    loss.backward()
    assert gates[0].grad[0].abs().sum() == 0 and gates[0].grad[1].abs().sum() > 0


def test_gate_loss_on_hard_straight_through_ratio():
    from host.assembler import hard_gates_st

    w = torch.tensor([[0.2, 0.1, -0.1, -3.0]], requires_grad=True)  # soft gates ~0.55, 0.53, 0.47, 0.0
    hard = hard_gates_st(w)
    assert hard.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    loss = gate_loss([hard], torch.tensor([0.25]))  # hard ratio 0.5 > 0.25
    assert torch.isclose(loss, torch.tensor(0.0625))
    loss.backward()
    assert (w.grad[0, :3] > 0).all()  # pushes logits down through the soft gate's slope
