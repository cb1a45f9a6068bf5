import math

import pytest
import torch

from clipiqa.losses import quality_loss, scene_drift, score_from_logits, semantic_loss


def test_quality_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p_high = 0.5, 0.75
    q = torch.tensor([1.0, 0.25])
    expected = -(math.log(0.5) + 0.25 * math.log(0.75) + 0.75 * math.log(0.25)) / 2
    assert quality_loss(logits, q).item() == pytest.approx(expected, rel=1e-6)


def test_quality_loss_stable_for_large_logits_and_minimum_at_label():
    logits = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]])
    loss = quality_loss(logits, torch.tensor([1.0, 0.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-6)
    wrong = quality_loss(logits, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(wrong) and wrong.item() == pytest.approx(2000.0, rel=1e-6)
    # soft label: minimum where p_high == q
    z = torch.zeros(1, 2, requires_grad=True)
    q = torch.tensor([0.3])
    opt = torch.optim.SGD([z], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        quality_loss(z, q).backward()
        opt.step()
    assert score_from_logits(z).item() == pytest.approx(0.3, abs=1e-3)


def test_quality_loss_gradient_is_p_minus_q():
    logits = torch.tensor([[0.3, -0.2], [1.0, 2.0]], requires_grad=True)
    q = torch.tensor([0.9, 0.1], dtype=torch.float64)  # dtype is cast
    quality_loss(logits, q).backward()
    p = torch.softmax(logits.detach(), 1)
    target = torch.stack([q.float(), 1 - q.float()], 1)
    assert torch.allclose(logits.grad, (p - target) / 2, atol=1e-6)


def test_quality_loss_shape_errors():
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        quality_loss(torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="q must have shape"):
        quality_loss(torch.zeros(3, 2), torch.zeros(2))


def test_semantic_loss_is_cross_entropy_and_gradient_matches_kl():
    torch.manual_seed(0)
    s = torch.randn(4, 9, requires_grad=True)
    t = torch.randn(4, 9, requires_grad=True)
    loss = semantic_loss(s, t)
    pt = torch.softmax(t.detach(), 1)
    expected = -(pt * torch.log_softmax(s.detach(), 1)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    g_ce = torch.autograd.grad(loss, s)[0]
    g_kl = torch.autograd.grad(scene_drift(s, t), s)[0]
    assert torch.allclose(g_ce, g_kl, atol=1e-6)
    # the teacher gets no gradient
    semantic_loss(s, t).backward()
    assert t.grad is None
    # CE = KL + H(teacher)
    entropy = -(pt * pt.log()).sum(1).mean()
    assert loss.item() == pytest.approx(scene_drift(s, t).item() + entropy.item(), rel=1e-5)


def test_semantic_loss_temperature_and_validation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    pt = torch.softmax(t / 2.0, 1)
    expected = -(pt * torch.log_softmax(s / 2.0, 1)).sum()
    assert semantic_loss(s, t, T=2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        semantic_loss(torch.zeros(2, 9), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="temperature"):
        semantic_loss(s, t, T=0.0)
    with pytest.raises(ValueError, match="temperature"):
        scene_drift(s, t, T=float("nan"))


def test_scene_drift_values():
    z = torch.randn(3, 9)
    assert scene_drift(z, z).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.log(torch.tensor([[0.5, 0.5]]))
    t = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert scene_drift(s, t).item() == pytest.approx(expected, rel=1e-5)
    # a teacher with a zero-probability class stays finite
    t_hard = torch.tensor([[0.0, -1e9]])
    assert torch.isfinite(scene_drift(s, t_hard))


def test_score_from_logits():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [-100.0, 100.0]])
    assert torch.allclose(score_from_logits(logits), torch.tensor([0.75, 0.5, 0.0]), atol=1e-6)
    with pytest.raises(ValueError):
        score_from_logits(torch.zeros(4))
