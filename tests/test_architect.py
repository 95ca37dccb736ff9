"""The bilevel steps of attention-guided search (Eqs. 12-13): what each step may touch,
and the second-order hypergradient against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nos_ops import SearchNetwork
from nos_ops.search import Architect, attention_transfer_loss, weight_step
from nos_ops.search.architect import StagesForward, _sgd_direction, search_network

pytestmark = pytest.mark.usefixtures("single_thread")


def _tiny_search_net(space: str = "nos") -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(channels=4, num_classes=3, layers=3, space=space)


def _batches(dtype: torch.dtype = torch.float32, size: int = 8, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    tx = torch.randn(batch, 3, size, size, generator=g, dtype=dtype)
    vx = torch.randn(batch, 3, size, size, generator=g, dtype=dtype)
    ty = torch.randint(0, 3, (batch,), generator=g)
    vy = torch.randint(0, 3, (batch,), generator=g)
    return tx, ty, vx, vy


class _PoolTeacher(nn.Module):
    """A fixed 'teacher' whose stages match the tiny search network's resolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = torch.tanh(self.conv(x))
        return [t, F.avg_pool2d(t, 2), F.avg_pool2d(t, 4)]


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("second_order", [False, True])
def test_architect_moves_only_the_architecture(second_order):
    net = _tiny_search_net()
    net.train()
    teacher = _PoolTeacher()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    tx, ty, vx, vy = _batches()
    weight_step(net, opt, tx, ty, teacher, at_weight=10.0)  # momentum buffers exist
    momentum = {id(p): opt.state[p]["momentum_buffer"].clone() for p in net.weight_parameters()}
    arch_ids = {id(p) for p in net.arch_parameters()}
    before = _snapshot(net)
    architect = Architect(net, lr=1e-2, second_order=second_order, at_weight=10.0, teacher=teacher)
    stats = architect.step(tx, ty, vx, vy, eta=0.1, weight_optimizer=opt)

    after = _snapshot(net)
    for name in ("alphas_normal", "alphas_reduce"):
        assert not torch.equal(before[name], after[name]), name
    for name, value in before.items():
        if not name.startswith("alphas"):  # weights and BatchNorm buffers untouched
            assert torch.equal(value, after[name]), name
    assert all(p.grad is None for p in net.arch_parameters())
    for p in net.weight_parameters():
        assert id(p) not in arch_ids
        assert torch.equal(opt.state[p]["momentum_buffer"], momentum[id(p)])
    assert set(stats) == {"loss", "ce", "at_loss"}
    assert stats["at_loss"] > 0
    assert torch.allclose(stats["loss"], stats["ce"] + 10.0 * stats["at_loss"])


def test_weight_step_leaves_the_architecture_alone():
    net = _tiny_search_net("darts")
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    tx, ty, _, _ = _batches()
    alphas = [p.detach().clone() for p in net.arch_parameters()]
    weights = [p.detach().clone() for p in net.weight_parameters()]
    stats = weight_step(net, opt, tx, ty, _PoolTeacher(), at_weight=1e3, grad_clip=5.0)
    for p, a in zip(net.arch_parameters(), alphas):
        assert p.grad is None
        assert p.requires_grad
        assert torch.equal(p, a)
    assert any(not torch.equal(p, w) for p, w in zip(net.weight_parameters(), weights))
    grad_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in net.weight_parameters() if p.grad is not None])
    )
    assert grad_norm <= 5.0 + 1e-4
    assert 0 <= stats["correct"] <= len(ty)
    assert stats["at_loss"] > 0


def test_weight_step_without_teacher_is_cross_entropy():
    net = _tiny_search_net("darts")
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    tx, ty, _, _ = _batches()
    expected = F.cross_entropy(net(tx), ty)
    stats = weight_step(net, opt, tx, ty)
    assert torch.allclose(stats["loss"], expected, atol=1e-6)
    assert stats["at_loss"] == 0


class _SmoothSearchNet(nn.Module):
    """A two-op supernet with smooth activations (no ReLU/max-pool kinks), a BatchNorm and
    an edge-weight vector: the unrolled objective is smooth in A, so central finite
    differences are exact to O(h^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.ops = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)])
        self.head = nn.Linear(4, 3)
        self.alphas = nn.Parameter(0.5 * torch.randn(2))
        self.betas = nn.Parameter(0.5 * torch.randn(2))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n not in ("alphas", "betas")]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s0 = torch.tanh(self.bn(self.conv(x)))
        s1 = sum(w * torch.tanh(op(s0)) for w, op in zip(self.alphas.softmax(0), self.ops))
        s2 = F.avg_pool2d(s1, 2) * (1 + self.betas.sigmoid().sum())
        return self.head(s2.mean((2, 3))), [s0, s1, s2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


def test_second_order_hypergradient_matches_finite_differences():
    """The architect's second-order gradient (DARTS: analytic outer gradient minus eta
    times a finite-difference Hessian-vector product) against central differences of the
    unrolled objective f(A) = L_val(w - eta * sgd_step(grad L_train(w, A)), A), both with
    attention transfer. float64 and h = 1e-5: the central difference is good to ~1e-9; the
    DARTS finite-difference HVP (eps = 0.01 / ||dw'||) to ~1e-6 relative here. Tolerance:
    1e-4 relative to the largest component; the first-order gradient is ~40% off."""
    torch.manual_seed(0)
    net = _SmoothSearchNet().double()
    teacher_conv = nn.Conv2d(3, 5, 3, padding=1).double()

    def teacher(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            t = torch.tanh(teacher_conv(x))
            return [t, 2 * t, F.avg_pool2d(t, 2)]

    tx, ty, vx, vy = _batches(torch.float64, batch=6)
    lam, eta, momentum, wd = 0.5, 0.1, 0.9, 3e-4
    opt = torch.optim.SGD(net.weight_parameters(), lr=eta, momentum=momentum, weight_decay=wd)
    weight_step(net, opt, tx, ty, teacher, lam)
    architect = Architect(net, second_order=True, at_weight=lam, teacher=teacher)
    grads, _ = architect.hypergradient(tx, ty, vx, vy, eta, opt)

    staged = StagesForward(net)
    buffers = {n: b.clone() for n, b in staged.named_buffers()}
    weights = {n: p for n, p in staged.named_parameters() if n not in ("net.alphas", "net.betas")}

    def objective(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, stages = functional_call(staged, {**params, **buffers}, (x,))
        return F.cross_entropy(logits, y) + lam * attention_transfer_loss(stages, teacher(x))

    def unrolled(alphas: torch.Tensor, betas: torch.Tensor) -> float:
        arch = {"net.alphas": alphas, "net.betas": betas}
        w = {n: p.detach().requires_grad_() for n, p in weights.items()}
        g = torch.autograd.grad(objective({**w, **arch}, tx, ty), list(w.values()))
        w_next = {
            n: p.detach()
            - eta * (momentum * opt.state[weights[n]]["momentum_buffer"] + gi + wd * p.detach())
            for (n, p), gi in zip(w.items(), g)
        }
        return objective({**w_next, **arch}, vx, vy).item()

    h = 1e-5
    base = [p.detach().clone() for p in net.arch_parameters()]
    numeric = [torch.zeros_like(p) for p in base]
    for i, p in enumerate(base):
        for j in range(p.numel()):
            step = torch.zeros_like(p).view(-1)
            step[j] = h
            plus = [q + step.view_as(q) if k == i else q for k, q in enumerate(base)]
            minus = [q - step.view_as(q) if k == i else q for k, q in enumerate(base)]
            numeric[i].view(-1)[j] = (unrolled(*plus) - unrolled(*minus)) / (2 * h)

    def rel_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))

    assert rel_error(grads, numeric) < 1e-4
    first, _ = Architect(net, at_weight=lam, teacher=teacher).hypergradient(
        tx, ty, vx, vy, eta, opt
    )
    assert rel_error(first, numeric) > 1e-2


@pytest.mark.parametrize(
    "momentum,dampening,nesterov,weight_decay",
    [(0.0, 0.0, False, 0.0), (0.9, 0.0, False, 3e-4), (0.9, 0.0, True, 1e-3), (0.5, 0.1, False, 0)],
)
def test_virtual_step_is_the_sgd_step(momentum, dampening, nesterov, weight_decay):
    """The second order's virtual step w' is exactly what the weight optimiser would do."""
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(5))
    opt = torch.optim.SGD(
        [param],
        lr=0.3,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )
    for _ in range(2):  # the second step has a momentum buffer
        grad = torch.randn(5)
        expected = param.detach() - 0.3 * _sgd_direction(param, grad, opt, opt.param_groups[0])
        param.grad = grad.clone()
        opt.step()
        assert torch.allclose(param.detach(), expected, atol=1e-6)
    assert torch.equal(_sgd_direction(param, grad, opt, None), torch.zeros(5))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="lr=0"):
        Architect(_tiny_search_net("darts"), lr=0)
    with pytest.raises(ValueError, match="at_weight=-1"):
        Architect(_tiny_search_net("darts"), at_weight=-1)
    with pytest.raises(TypeError, match="arch_parameters"):
        search_network(nn.Linear(2, 2))
