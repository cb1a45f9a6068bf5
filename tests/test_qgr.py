import math

import pytest
import torch

from clipiqa.qgr import QGRConfig, QGRStats, project_gradients, qgr_step


def t(*v, dtype=torch.float32):
    return torch.tensor(v, dtype=dtype)


def close(a, b, atol=1e-6):
    return torch.allclose(a.float(), torch.as_tensor(b, dtype=torch.float32), atol=atol)


# ---------------------------------------------------------------------------------------------- per-tensor rule


def test_agreeing_pair_projected_by_formula():
    gq, gs = t(3.0, 1.0), t(1.0, 0.0)  # dot = 3, ||gs||^2 = 1
    out, st = project_gradients([gq], [gs], QGRConfig(lam=5.0))
    assert close(out[0], [3.0 - 5 * 3.0, 1.0])  # [-12, 1]
    assert st.n_projected == 1 and st.n_tensors == 1 and st.frac_projected == 1.0
    assert st.cosine == pytest.approx(3.0 / math.sqrt(10.0))
    # lam = 1 removes the g_s component exactly
    out1, _ = project_gradients([gq], [gs], QGRConfig(lam=1.0))
    assert close(out1[0], [0.0, 1.0])
    assert float(out1[0] @ gs) == pytest.approx(0.0)


def test_agreeing_3d_with_non_unit_gs():
    gq, gs = t(1.0, 2.0, 3.0), t(2.0, 0.0, 2.0)  # dot = 8, ||gs||^2 = 8 -> coef = lam
    out, _ = project_gradients([gq], [gs], QGRConfig(lam=0.5))
    assert close(out[0], [1.0 - 0.5 * 2.0, 2.0, 3.0 - 0.5 * 2.0])


def test_opposed_and_orthogonal_unchanged_under_agree():
    gq_opp, gs_opp = t(-1.0, 1.0), t(1.0, 0.0)
    gq_ort, gs_ort = t(0.0, 2.0, 0.0), t(1.0, 0.0, 5.0)
    out, st = project_gradients([gq_opp, gq_ort], [gs_opp, gs_ort], QGRConfig())
    assert out[0] is gq_opp and out[1] is gq_ort
    assert st.n_projected == 0 and st.frac_projected == 0.0
    assert st.per_tensor_cosine[0] == pytest.approx(-1 / math.sqrt(2))
    assert st.per_tensor_cosine[1] == pytest.approx(0.0)


def test_conflict_condition_mirrors():
    cfg = QGRConfig(lam=1.0, condition="conflict")
    gq, gs = t(-1.0, 1.0), t(2.0, 0.0)  # dot = -2, ||gs||^2 = 4
    out, st = project_gradients([gq], [gs], cfg)
    assert close(out[0], [0.0, 1.0])  # ProGrad-like: conflicting component removed
    assert st.n_projected == 1
    agree, _ = project_gradients([t(3.0, 1.0)], [t(1.0, 0.0)], cfg)
    assert close(agree[0], [3.0, 1.0])
    ortho, _ = project_gradients([t(0.0, 1.0)], [t(1.0, 0.0)], cfg)
    assert close(ortho[0], [0.0, 1.0])


# ---------------------------------------------------------------------------------------------- granularity


def test_per_tensor_projects_but_global_does_not():
    # tensor 0 agrees (dot 1), tensor 1 opposes strongly (dot -3): global dot = -2 < 0
    gq = [t(1.0, 0.0), t(-3.0, 0.0)]
    gs = [t(1.0, 0.0), t(1.0, 0.0)]
    per, sp = project_gradients(gq, gs, QGRConfig(lam=2.0, granularity="per-tensor"))
    glo, sg = project_gradients(gq, gs, QGRConfig(lam=2.0, granularity="global"))
    assert close(per[0], [1.0 - 2.0 * 1.0, 0.0]) and close(per[1], [-3.0, 0.0])
    assert sp.n_projected == 1
    assert glo[0] is gq[0] and glo[1] is gq[1] and sg.n_projected == 0
    # global cosine: dot -2, ||gq||^2 = 10, ||gs||^2 = 2
    assert sp.cosine == pytest.approx(-2.0 / math.sqrt(20.0)) == sg.cosine


def test_global_projects_but_per_tensor_only_partly():
    # tensor 0 opposes (dot -1), tensor 1 agrees (dot 3): global dot = 2 > 0, ||gs||^2 = 2 -> coef = lam
    gq = [t(-1.0, 0.0), t(3.0, 0.0)]
    gs = [t(1.0, 0.0), t(1.0, 0.0)]
    lam = 1.5
    glo, sg = project_gradients(gq, gs, QGRConfig(lam=lam, granularity="global"))
    assert close(glo[0], [-1.0 - lam, 0.0]) and close(glo[1], [3.0 - lam, 0.0])
    assert sg.n_projected == 2
    per, sp = project_gradients(gq, gs, QGRConfig(lam=lam))
    assert per[0] is gq[0] and close(per[1], [3.0 - lam * 3.0, 0.0])
    assert sp.n_projected == 1


def test_global_equals_concatenated_single_tensor():
    torch.manual_seed(1)
    gq = [torch.randn(3, 4), torch.randn(5)]
    gs = [torch.randn(3, 4), torch.randn(5)]
    gs = [g if float(sum((a * b).sum() for a, b in zip(gq, gs))) > 0 else -g for g in gs]  # make it agree
    out, _ = project_gradients(gq, gs, QGRConfig(lam=3.0, granularity="global"))
    cat_q = torch.cat([g.reshape(-1) for g in gq])
    cat_s = torch.cat([g.reshape(-1) for g in gs])
    ref, _ = project_gradients([cat_q], [cat_s], QGRConfig(lam=3.0))
    assert torch.allclose(torch.cat([g.reshape(-1) for g in out]), ref[0], atol=1e-5)
    assert out[0].shape == (3, 4)


# ---------------------------------------------------------------------------------------------- off, None, zero


def test_lam_zero_and_disabled_return_gq_with_stats():
    gq, gs = [t(3.0, 1.0), t(1.0, 1.0)], [t(1.0, 0.0), t(-1.0, 0.0)]
    for cfg in (QGRConfig(lam=0.0), QGRConfig(enabled=False)):
        out, st = project_gradients(gq, gs, cfg)
        assert all(o is g for o, g in zip(out, gq))
        assert st.n_projected == 0 and st.frac_projected == 0.0
        assert st.n_condition == 1  # the first tensor would have been projected
        assert st.cosine == pytest.approx(2.0 / math.sqrt(12.0 * 2.0))
    assert QGRConfig(lam=0.0).active is False and QGRConfig().active is True


def test_none_and_zero_norm_handling():
    gq = [t(1.0, 1.0), None, t(2.0, 0.0), t(1.0, 0.0)]
    gs = [None, t(1.0, 0.0), t(0.0, 0.0), t(1.0, 0.0)]
    out, st = project_gradients(gq, gs, QGRConfig(lam=1.0))
    assert out[0] is gq[0]  # no semantic gradient (e.g. text context): keep g_q
    assert out[1] is None  # no quality gradient: no update, whatever g_s
    assert out[2] is gq[2]  # zero-norm g_s: keep g_q
    assert close(out[3], [0.0, 0.0])
    assert st.n_tensors == 3 and st.n_projected == 1
    assert st.frac_projected == pytest.approx(1 / 3)
    assert math.isnan(st.per_tensor_cosine[0]) and math.isnan(st.per_tensor_cosine[1])
    assert math.isnan(st.per_tensor_cosine[2]) and st.per_tensor_cosine[3] == pytest.approx(1.0)
    assert len(st.per_tensor_cosine) == 4
    # global cosine over the pairs (2 and 3): dot 1, ||gq||^2 = 5, ||gs||^2 = 1
    assert st.cosine == pytest.approx(1.0 / math.sqrt(5.0))


def test_no_pairs_gives_nan_cosine():
    out, st = project_gradients([t(1.0), None], [None, None], QGRConfig())
    assert math.isnan(st.cosine) and st.n_tensors == 1 and st.n_projected == 0
    _, empty = project_gradients([], [], QGRConfig(granularity="global"))
    assert math.isnan(empty.cosine) and empty.n_tensors == 0 and math.isnan(empty.frac_projected)
    assert isinstance(empty, QGRStats)


def test_length_and_shape_mismatch():
    with pytest.raises(ValueError, match="same length"):
        project_gradients([t(1.0)], [], QGRConfig())
    with pytest.raises(ValueError, match=r"g_q\[0\] and g_s\[0\]"):
        project_gradients([t(1.0, 2.0)], [t(1.0, 2.0, 3.0)], QGRConfig())


# ---------------------------------------------------------------------------------------------- dtype, purity


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtype_preserved(dtype):
    gq, gs = t(3.0, 1.0, dtype=dtype), t(1.0, 0.0, dtype=dtype)
    for gran in ("per-tensor", "global"):
        out, st = project_gradients([gq], [gs], QGRConfig(lam=5.0, granularity=gran))
        assert out[0].dtype == dtype
        assert close(out[0], [-12.0, 1.0], atol=1e-2)
        assert st.n_projected == 1


def test_bf16_dot_accumulated_in_float32():
    # 4096 entries of 1: a bf16 running sum stalls at 256, a float32 one does not
    n = 4096
    gq = torch.ones(n, dtype=torch.bfloat16)
    gs = torch.ones(n, dtype=torch.bfloat16)
    out, st = project_gradients([gq], [gs], QGRConfig(lam=0.5))
    assert st.cosine == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(out[0].float(), torch.full((n,), 0.5), atol=1e-2)


def test_inputs_untouched():
    gq = [torch.tensor([3.0, 1.0]), torch.tensor([[1.0, 2.0]])]
    gs = [torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0]])]
    before_q = [g.clone() for g in gq]
    before_s = [g.clone() for g in gs]
    for gran in ("per-tensor", "global"):
        out, _ = project_gradients(gq, gs, QGRConfig(lam=5.0, granularity=gran))
        out[0].add_(100.0)  # results are new tensors, not views of the inputs
    assert all(torch.equal(a, b) for a, b in zip(gq, before_q))
    assert all(torch.equal(a, b) for a, b in zip(gs, before_s))


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"granularity": "x"}, r"QGRConfig.granularity='x' is not allowed; use one of 'per-tensor', 'global'"),
        ({"condition": "always"}, r"QGRConfig.condition='always' is not allowed; use one of 'agree', 'conflict'"),
        ({"lam": -1.0}, r"QGRConfig.lam=-1.0 is not allowed; use a finite number >= 0"),
        ({"lam": float("inf")}, r"QGRConfig.lam=inf is not allowed"),
        ({"lam": float("nan")}, r"QGRConfig.lam=nan is not allowed"),
        ({"lam": "big"}, r"QGRConfig.lam='big' is not allowed"),
        ({"enabled": "yes"}, r"QGRConfig.enabled='yes' is not allowed"),
    ],
)
def test_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        QGRConfig(**kwargs)


def test_config_defaults_and_frozen():
    cfg = QGRConfig()
    assert not hasattr(cfg, "eps")  # no threshold: only an exactly zero |g_s|^2 skips the projection
    assert (cfg.lam, cfg.granularity, cfg.condition, cfg.enabled) == (5.0, "per-tensor", "agree", True)
    with pytest.raises(Exception):
        cfg.lam = 1.0  # frozen
    with pytest.raises(TypeError):
        project_gradients([t(1.0)], [t(1.0)], {"lam": 1.0})


# ---------------------------------------------------------------------------------------------- qgr_step


class Tiny(torch.nn.Module):
    """Shared trunk; a quality head; a scene head; plus a 'context' tensor that only the quality loss uses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(4, 3)
        self.q_head = torch.nn.Linear(3, 2)
        self.s_head = torch.nn.Linear(3, 5)
        self.ctx = torch.nn.Parameter(torch.randn(2))
        self.unused = torch.nn.Parameter(torch.randn(3))
        self.frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return self.q_head(h) + self.ctx, self.s_head(h)


def _losses(model, x, q, teacher):
    from clipiqa.losses import quality_loss, semantic_loss

    zq, zs = model(x)
    return quality_loss(zq, q), semantic_loss(zs, teacher)


@pytest.mark.parametrize("cfg", [QGRConfig(), QGRConfig(lam=1.0, granularity="global"),
                                 QGRConfig(condition="conflict")])
def test_qgr_step_matches_project_gradients(cfg):
    model = Tiny()
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    g = torch.Generator().manual_seed(3)
    x, q, teacher = torch.randn(8, 4, generator=g), torch.rand(8, generator=g), torch.randn(8, 5, generator=g)

    lq, ls = _losses(model, x, q, teacher)
    g_q = torch.autograd.grad(lq, trainable, retain_graph=True, allow_unused=True)
    g_s = torch.autograd.grad(ls, trainable, allow_unused=True)
    ref, ref_stats = project_gradients(g_q, g_s, cfg)

    model.zero_grad(set_to_none=True)
    lq, ls = _losses(model, x, q, teacher)
    stats = qgr_step(params, lq, ls, cfg)
    for p, r in zip(trainable, ref):
        if r is None:
            assert p.grad is None
        else:
            assert torch.allclose(p.grad, r, atol=1e-7)
    assert model.unused.grad is None and model.frozen.grad is None
    assert stats.n_projected == ref_stats.n_projected
    assert stats.cosine == pytest.approx(ref_stats.cosine)
    assert len(stats.per_tensor_cosine) == len(params)
    assert math.isnan(stats.per_tensor_cosine[params.index(model.ctx)])  # no semantic gradient

    # accumulation like backward(): a second step adds
    first = {id(p): p.grad.clone() for p in trainable if p.grad is not None}
    lq, ls = _losses(model, x, q, teacher)
    qgr_step(params, lq, ls, cfg)
    for p in trainable:
        if p.grad is not None:
            assert torch.allclose(p.grad, 2 * first[id(p)], atol=1e-6)


def test_qgr_step_off_equals_plain_backward():
    model = Tiny()
    params = list(model.parameters())
    x, q, teacher = torch.randn(6, 4), torch.rand(6), torch.randn(6, 5)
    lq, _ = _losses(model, x, q, teacher)
    lq.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for compute_stats in (True, False):
        model.zero_grad(set_to_none=True)
        lq, ls = _losses(model, x, q, teacher)
        st = qgr_step(params, lq, ls, QGRConfig(lam=0.0), compute_stats=compute_stats)
        got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[n], ref[n]) for n in ref)
        assert st.n_projected == 0
        assert math.isnan(st.cosine) != compute_stats


def test_qgr_step_without_semantic_loss_and_errors():
    model = Tiny()
    params = list(model.parameters())
    lq, _ = _losses(model, torch.randn(2, 4), torch.rand(2), torch.randn(2, 5))
    st = qgr_step(params, lq, None, QGRConfig())
    assert st.n_projected == 0 and math.isnan(st.cosine)
    assert model.trunk.weight.grad is not None
    with pytest.raises(ValueError, match="requires_grad"):
        qgr_step([model.frozen], lq, None, QGRConfig())


# ------------------------------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("scale", [1e-10, 1e-20, 1e-40])
@pytest.mark.parametrize("gran", ["per-tensor", "global"])
def test_tiny_semantic_gradient_is_projected_as_the_released_rule(scale, gran):
    # |g_s|^2 = scale^2 (1e-20, 1e-40, 1e-80: the last underflows float32) is not zero: the released rule projects,
    # and the correction lam * <g_q, g_s> / |g_s|^2 * g_s does not depend on |g_s|
    gq, gs = t(3.0, 1.0), t(scale, 0.0)
    out, st = project_gradients([gq], [gs], QGRConfig(lam=5.0, granularity=gran))
    assert st.n_projected == 1 and st.n_condition == 1
    assert close(out[0], [3.0 - 5 * 3.0, 1.0])


def test_projection_is_invariant_to_the_scale_of_g_s():
    g = torch.Generator().manual_seed(5)
    gq = [torch.randn(40, generator=g) for _ in range(76)]
    gs = [torch.randn(40, generator=g) for _ in range(76)]
    if sum(float(a @ b) for a, b in zip(gq, gs)) < 0:
        gs = [-s for s in gs]  # the global condition holds too
    for gran in ("per-tensor", "global"):
        ref, ref_st = project_gradients(gq, gs, QGRConfig(lam=5.0, granularity=gran))
        for scale in (1e-4, 1e-8, 1e-15, 1e-20):
            out, st = project_gradients(gq, [scale * s for s in gs], QGRConfig(lam=5.0, granularity=gran))
            assert st.n_projected == ref_st.n_projected > 0
            for a, b in zip(out, ref):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_exactly_zero_semantic_gradient_keeps_g_q():
    gq = t(3.0, 1.0)
    for gran in ("per-tensor", "global"):
        out, st = project_gradients([gq], [t(0.0, 0.0)], QGRConfig(granularity=gran))
        assert out[0] is gq and st.n_projected == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("cfg", [QGRConfig(), QGRConfig(granularity="global"), QGRConfig(lam=0.0)])
def test_non_finite_semantic_gradient_raises(bad, cfg):
    from clipiqa.qgr import NonFiniteGradientError
    with pytest.raises(NonFiniteGradientError, match=r"semantic gradient g_s\[1\] is not finite"):
        project_gradients([t(1.0, 2.0), t(3.0, 1.0)], [t(1.0, 0.0), t(bad, 0.0)], cfg)


def _nan_gradient(loss):
    """The same value as ``loss`` but a NaN gradient (the classic NaN-through-where)."""
    return torch.where(torch.tensor(True), loss, loss * float("nan"))


def test_qgr_step_raises_on_a_nan_semantic_gradient():
    from clipiqa.qgr import NonFiniteGradientError
    model = Tiny()
    params = list(model.parameters())
    lq, ls = _losses(model, torch.randn(4, 4), torch.rand(4), torch.randn(4, 5))
    assert torch.isfinite(_nan_gradient(ls))
    with pytest.raises(NonFiniteGradientError):
        qgr_step(params, lq, _nan_gradient(ls), QGRConfig())


def test_qgr_off_without_stats_runs_one_backward(monkeypatch):
    real, calls = torch.autograd.grad, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    model = Tiny()
    for cfg, stats, expected in ((QGRConfig(lam=0.0), False, 1), (QGRConfig(enabled=False), False, 1),
                                 (QGRConfig(lam=0.0), True, 2), (QGRConfig(), False, 2)):
        calls.clear()
        lq, ls = _losses(model, torch.randn(4, 4), torch.rand(4), torch.randn(4, 5))
        qgr_step(list(model.parameters()), lq, ls, cfg, compute_stats=stats)
        assert len(calls) == expected, (cfg, stats)


# ---------------------------------------------------------------------------------------------- descent guard
def _pair_at_cosine(c: float):
    """Unit g_q at cosine c with g_s = e1 (float64, so the bound is checked to rounding)."""
    gq = torch.tensor([c, math.sqrt(1.0 - c * c), 0.0], dtype=torch.float64)
    gs = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    return gq, gs


@pytest.mark.parametrize("c", [0.3, 0.447, 0.9])
@pytest.mark.parametrize("granularity", ["per-tensor", "global"])
def test_released_rule_descends_by_one_minus_lam_c_squared(c, granularity):
    gq, gs = _pair_at_cosine(c)
    out, st = project_gradients([gq], [gs], QGRConfig(lam=5.0, granularity=granularity))
    assert float(out[0] @ gq) == pytest.approx(1.0 - 5.0 * c * c, abs=1e-12)
    assert st.n_guarded == 0
    if c == 0.9:
        assert float(out[0] @ gq) < 0  # the released step climbs the quality loss


@pytest.mark.parametrize("granularity", ["per-tensor", "global"])
@pytest.mark.parametrize("condition", ["agree", "conflict"])
def test_guard_keeps_the_descent_bound_exactly_where_it_acts(granularity, condition):
    kappa = 0.1
    for c, acts in ((0.3, False), (0.447, True), (0.9, True)):
        gq, gs = _pair_at_cosine(c)
        if condition == "conflict":
            gs = -gs
        released, _ = project_gradients([gq], [gs], QGRConfig(lam=5.0, granularity=granularity, condition=condition))
        out, st = project_gradients([gq], [gs], QGRConfig(lam=5.0, granularity=granularity, condition=condition,
                                                          min_descent=kappa))
        descent = float(out[0] @ gq)
        assert st.n_projected == 1 and st.n_guarded == int(acts), c
        if acts:
            assert descent == pytest.approx(kappa * float(gq @ gq), rel=1e-12), c
            # only the size of the correction is capped: still along -g_s, with the released sign
            delta, delta_released = out[0] - gq, released[0] - gq
            assert float(delta @ delta_released) > 0 and torch.linalg.norm(delta) < torch.linalg.norm(delta_released)
        else:
            assert torch.equal(out[0], released[0]), c  # at c = 0.3 the guard does not act
            assert descent >= kappa * float(gq @ gq)


def test_guarded_step_descends_a_quadratic_loss_the_released_step_climbs():
    target = torch.zeros(3, dtype=torch.float64)
    w = torch.tensor([0.9, math.sqrt(1 - 0.81), 0.0], dtype=torch.float64)  # g_q = w - target, at c = 0.9 to g_s
    gs = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    loss = lambda v: 0.5 * float((v - target) @ (v - target))  # noqa: E731
    gq = w - target
    lr = 0.05
    released, _ = project_gradients([gq], [gs], QGRConfig(lam=5.0))
    guarded, _ = project_gradients([gq], [gs], QGRConfig(lam=5.0, min_descent=0.1))
    assert loss(w - lr * released[0]) > loss(w)
    assert loss(w - lr * guarded[0]) < loss(w)


def test_global_guard_bounds_the_concatenation_and_counts_every_tensor_it_caps():
    a = torch.tensor([0.9, math.sqrt(1 - 0.81)], dtype=torch.float64)
    b = torch.tensor([0.5, -0.2, 0.3], dtype=torch.float64)
    sa = torch.tensor([1.0, 0.0], dtype=torch.float64)
    sb = torch.tensor([0.4, 0.0, 0.3], dtype=torch.float64)
    unpaired = torch.tensor([0.2], dtype=torch.float64)
    cfg = QGRConfig(lam=5.0, granularity="global", min_descent=0.25)
    out, st = project_gradients([a, b, unpaired], [sa, sb, None], cfg)
    paired_qq = float(a @ a + b @ b)
    descent = float(out[0] @ a + out[1] @ b)
    assert descent == pytest.approx(0.25 * paired_qq, rel=1e-12)
    whole = descent + float(out[2] @ unpaired)
    assert whole >= 0.25 * (paired_qq + float(unpaired @ unpaired))
    assert st.n_guarded == 2 and out[2] is unpaired


def test_zero_min_descent_is_the_released_rule_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g_q = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
        g_s = [torch.randn(4, 3, generator=gen) + 2 * g_q[0], torch.randn(5, generator=gen)]
        for gran in ("per-tensor", "global"):
            base, _ = project_gradients(g_q, g_s, QGRConfig(lam=5.0, granularity=gran))
            same, st = project_gradients(g_q, g_s, QGRConfig(lam=5.0, granularity=gran, min_descent=0.0))
            assert all(torch.equal(x, y) for x, y in zip(base, same)) and st.n_guarded == 0


def test_guard_and_auto_settings_are_validated():
    for bad in (-0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="min_descent"):
            QGRConfig(min_descent=bad)
    for bad in ((1.0, 5.0), (), (0.0, -1.0), "abc"):
        with pytest.raises(ValueError, match="auto_grid"):
            QGRConfig(lam="auto", auto_grid=bad)
    with pytest.raises(ValueError, match="auto_folds"):
        QGRConfig(lam="auto", auto_folds=1)
    with pytest.raises(ValueError, match="lam"):
        QGRConfig(lam="automatic")
    auto = QGRConfig(lam="auto")
    assert auto.active and auto.min_descent > 0  # the automatic rule always runs guarded
    assert QGRConfig(lam="auto", min_descent=0.3).min_descent == 0.3
    assert QGRConfig().min_descent == 0.0  # the released rule by default
    with pytest.raises(ValueError, match="auto"):
        project_gradients([t(1.0, 0.0)], [t(1.0, 0.0)], auto)
