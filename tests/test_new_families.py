"""The attention kinds of issue 14 -- area, reduce, performer, routing -- against references written here.

Every reference is independent of the library: stripes and regions from plain Python loops, the spatial reduction
cell by cell, FAVOR+ as an explicit ``N x N`` kernel matrix in float64, BiFormer's region selection by sorting Python
lists. Outputs and gradients are compared with the float64 dense attention of ``tests/reference.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reference import reference_attention
from yolo_attn.attention import Attention, attend, pattern_mask
from yolo_attn.attention.performer import PerformerAttention, orthogonal_features, performer_attention
from yolo_attn.attention.reduce import ReduceAttention, reduce_attention
from yolo_attn.attention.routing import RoutingAttention, routing_attention, routing_mask

DIM, HEADS = 32, 2


def _leaves(*shape, n=3, scale=1.0):
    return [(torch.randn(*shape) * scale).requires_grad_(True) for _ in range(n)]


def _assert_same(out, leaves, reference, atol=1e-5):
    """Output and gradients w.r.t. ``leaves`` equal those of ``reference(*float64 copies)``."""
    leaves64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference(*leaves64)
    torch.testing.assert_close(out.double(), ref.detach(), atol=atol, rtol=0)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad.to(out.dtype))
    expected = torch.autograd.grad(ref, leaves64, grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e, atol=atol, rtol=0)


class _Largest(TorchDispatchMode):
    """Largest number of elements of any op output while active, and the key counts fused attention ops saw."""

    def __init__(self):
        super().__init__()
        self.largest, self.fused_keys = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if "scaled_dot_product" in str(func):
            self.fused_keys.append(args[1].shape[-2])
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


# ------------------------------------------------------------------------------------------------------------ area
def naive_area(h: int, w: int, area: int) -> torch.Tensor:
    """Stripes as Python lists: the token sequence cut into ``area`` chunks of ``ceil(N / area)``."""
    tokens = list(range(h * w))
    size = -(-len(tokens) // area)
    stripe_of = {}
    for s in range(area):
        for t in tokens[s * size:(s + 1) * size]:
            stripe_of[t] = s
    return torch.tensor([[stripe_of[i] == stripe_of[j] for j in tokens] for i in tokens])


AREA_CASES = [((8, 6), 4), ((6, 4), 4), ((5, 7), 4), ((3, 3), 4), ((5, 7), 1), ((4, 5), 3), ((2, 3), 50)]


@pytest.mark.parametrize(("hw", "area"), AREA_CASES)
def test_area_mask_matches_naive_stripes(hw, area):
    assert torch.equal(pattern_mask("area", hw, area=area), naive_area(*hw, area))


@pytest.mark.parametrize(("hw", "area"), AREA_CASES)
@pytest.mark.parametrize("batch", [1, 2])
def test_area_fast_path_equals_reference(hw, area, batch):
    n = hw[0] * hw[1]
    q, k, v = _leaves(batch, HEADS, n, 8)
    mask = naive_area(*hw, area)
    out = attend(q, k, v, "area", hw=hw, area=area)
    if 1 < area < n:
        assert (reference_attention(q, k, v, mask) - reference_attention(q, k, v)).abs().max() > 1e-3
    _assert_same(out, [q, k, v], lambda *t: reference_attention(*t, mask))


@pytest.mark.parametrize("hw", [(8, 6), (6, 4)])  # area divides H; area divides only H * W (stripes cut rows)
def test_area_groups_the_tokens_ultralytics_aattn_groups(hw):
    """ultralytics' AAttn (YOLO12) with its 7x7 positional conv silenced: output token i depends on input token j
    exactly when j is in i's area; found by perturbing one input token at a time."""
    from ultralytics.nn.modules.block import AAttn

    h, w = hw
    torch.manual_seed(0)
    attn = AAttn(dim=32, num_heads=1, area=4).eval()
    with torch.no_grad():
        attn.pe.conv.weight.zero_()  # pe(v) is then a constant: no spatial mixing outside the attention
        x = torch.randn(1, 32, h, w)
        base = attn(x)
        depends = torch.zeros(h * w, h * w, dtype=torch.bool)
        for j in range(h * w):
            bumped = x.clone()
            bumped[0, :, j // w, j % w] += 1.0
            depends[:, j] = (attn(bumped) - base).abs().amax(1).flatten() > 1e-6
    assert not depends.all()
    assert torch.equal(depends, pattern_mask("area", hw, area=4))


# ---------------------------------------------------------------------------------------------------------- reduce
def naive_reduce(x: torch.Tensor, hw, ratio: int, weight=None, bias=None) -> torch.Tensor:
    """Cell by cell: ``x [N, C]`` -> ``[M, C_out]``; conv over the zero-padded cell, or the mean of its real pixels."""
    h, w = hw
    cells = []
    for cy in range(-(-h // ratio)):
        for cx in range(-(-w // ratio)):
            pixels = [(y, xx) for y in range(cy * ratio, cy * ratio + ratio)
                      for xx in range(cx * ratio, cx * ratio + ratio) if y < h and xx < w]
            if weight is None:
                cells.append(torch.stack([x[y * w + xx] for y, xx in pixels]).mean(0))
            else:
                terms = [weight[:, :, y - cy * ratio, xx - cx * ratio] @ x[y * w + xx] for y, xx in pixels]
                cells.append(torch.stack(terms).sum(0) + bias)
    return torch.stack(cells)


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reduce_module_reference(module: ReduceAttention, x, conv_weight, hw):
    """The module's forward written out in float64 from its parameters (conv weight passed for its gradient)."""
    p = {k: v.detach().double() for k, v in module.state_dict().items()}
    c, heads = module.dim, module.num_heads
    wq, wkv = p["qkv.weight"][:c], p["qkv.weight"][c:]
    bq, bkv = p["qkv.bias"][:c], p["qkv.bias"][c:]
    outs = []
    for xb in x:
        weight, bias = (conv_weight, p["sr.bias"]) if module.reducer == "conv" else (None, None)
        xr = _layer_norm(naive_reduce(xb, hw, module.ratio, weight, bias), p["norm.weight"], p["norm.bias"], 1e-5)
        q = (xb @ wq.T + bq).reshape(-1, heads, c // heads).transpose(0, 1)
        k, v = (xr @ wkv.T + bkv).reshape(-1, 2, heads, c // heads).permute(1, 2, 0, 3)
        o = reference_attention(q, k, v).transpose(0, 1).reshape(-1, c)
        outs.append(o @ p["proj.weight"].T + p["proj.bias"])
    return torch.stack(outs)


@pytest.mark.parametrize(("hw", "ratio"), [((8, 8), 2), ((7, 5), 2), ((7, 5), 3), ((5, 9), 4)])
@pytest.mark.parametrize("reducer", ["conv", "pool"])
def test_reduce_module_equals_attention_over_cellwise_reduced_keys(hw, ratio, reducer):
    module = ReduceAttention(DIM, HEADS, ratio=ratio, reducer=reducer).eval()
    with torch.no_grad():
        module.norm.weight.normal_(1, 0.2)
        module.norm.bias.normal_(0, 0.2)
    x = torch.randn(2, hw[0] * hw[1], DIM, requires_grad=True)
    leaves = [x] + ([module.sr.weight] if reducer == "conv" else [])
    out = module(x, hw)
    conv = module.sr.weight if reducer == "conv" else None

    def reference(x64, *conv64):
        return reduce_module_reference(module, x64, conv64[0] if conv64 else conv, hw)

    full = Attention(DIM, HEADS, pattern="full").eval()
    full.load_state_dict({k: v for k, v in module.state_dict().items() if k.startswith(("qkv", "proj"))})
    assert (full(x, hw) - out).abs().max() > 1e-3  # fewer keys change the output
    _assert_same(out, leaves, reference)


@pytest.mark.parametrize("hw", [(6, 6), (5, 7)])
def test_reduce_ratio_one_is_full_attention(hw):
    module = ReduceAttention(DIM, HEADS, ratio=1).eval()
    full = Attention(DIM, HEADS, pattern="full").eval()
    full.load_state_dict(module.state_dict())  # ratio 1: no conv, no norm; the same qkv / proj
    x = torch.randn(2, hw[0] * hw[1], DIM)
    torch.testing.assert_close(module(x, hw), full(x, hw), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("hw", "ratio"), [((8, 8), 4), ((7, 5), 2), ((9, 10), 4)])
def test_reduce_core_equals_attention_over_pooled_keys(hw, ratio):
    n = hw[0] * hw[1]
    q, k, v = _leaves(2, HEADS, n, 8)

    def reference(q, k, v):
        kr, vr = (torch.stack([torch.stack([naive_reduce(t[b, i], hw, ratio) for i in range(HEADS)])
                               for b in range(2)]) for t in (k, v))
        return reference_attention(q, kr, vr)

    out = reduce_attention(q, k, v, hw, ratio)
    assert (reference_attention(q, k, v) - reference(q.double(), k.double(), v.double())).abs().max() > 1e-3
    _assert_same(out, [q, k, v], reference)


@pytest.mark.parametrize("reducer", ["conv", "pool"])
def test_reduce_largest_tensor_is_n_by_reduced_keys(reducer):
    hw, ratio = (24, 22), 4
    n, m = hw[0] * hw[1], math.ceil(hw[0] / ratio) * math.ceil(hw[1] / ratio)
    module = ReduceAttention(16, 1, ratio=ratio, reducer=reducer).eval()
    with torch.no_grad(), _Largest() as mode:
        module(torch.randn(1, n, 16), hw)
    assert mode.fused_keys == [m]  # every query attends M = ceil(H / r) * ceil(W / r) keys
    assert mode.largest <= n * m < n * n / 10  # O(N * N / r^2): the reduced logits at most


# ------------------------------------------------------------------------------------------------------- performer
def favor_reference(q, k, v, projection):
    """FAVOR+ with the explicit N x N kernel matrix, no stabiliser, float64."""
    d = q.shape[-1]
    w = projection.double()

    def phi(x):
        x = x / d ** 0.25
        return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2)

    kernel = phi(q) @ phi(k).transpose(-2, -1)
    return kernel @ v / kernel.sum(-1, keepdim=True)


@pytest.mark.parametrize("batch", [1, 2])
def test_performer_core_equals_explicit_kernel(batch):
    q, k, v = _leaves(batch, HEADS, 35, 16)
    projection = orthogonal_features(48, 16, torch.Generator().manual_seed(1))
    out = performer_attention(q, k, v, projection)
    _assert_same(out, [q, k, v], lambda *t: favor_reference(*t, projection))


def test_performer_error_against_softmax_falls_with_features():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, 64, 16, generator=gen) * 0.4 for _ in range(3))
    exact = reference_attention(q, k, v)
    medians = []
    for m in (16, 64, 256):
        errors = [(performer_attention(q, k, v, orthogonal_features(m, 16, torch.Generator().manual_seed(s)))
                   .double() - exact).abs().mean().item() for s in range(8)]
        medians.append(sorted(errors)[len(errors) // 2])
    assert medians[0] > medians[1] > medians[2], medians
    assert medians[2] < medians[0] / 3 and medians[2] < 0.005, medians  # ~1 / sqrt(m): 16x the features, ~1/4


def test_performer_is_stable_where_the_plain_exponent_underflows():
    q, k, v = (torch.randn(1, HEADS, 30, 16) * 12 for _ in range(3))
    projection = orthogonal_features(32, 16, torch.Generator().manual_seed(2))
    out = performer_attention(q, k, v, projection)
    plain = torch.exp((q / 2) @ projection.T - (q / 2).square().sum(-1, keepdim=True) / 2)
    assert (plain == 0).all(-1).any()  # float32 without the stabiliser: whole feature rows vanish (0 / 0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), favor_reference(q.double(), k.double(), v.double(), projection),
                               atol=2e-3, rtol=1e-3)  # inputs and values of magnitude ~12


def test_orthogonal_features_are_orthogonal_blocks_with_gaussian_norms():
    w = orthogonal_features(40, 16, torch.Generator().manual_seed(0))
    assert w.shape == (40, 16)
    for block in (w[:16], w[16:32]):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(gram.diagonal()), torch.zeros(16, 16), atol=1e-4, rtol=0)
    norms = w.norm(dim=1)
    assert norms.std() > 0.1 and 2.5 < norms.mean() < 5.5  # chi(16): mean ~3.9, not unit rows


def test_performer_redraw_policy():
    def trained(passes: int, redraw: int) -> PerformerAttention:
        torch.manual_seed(0)
        module = PerformerAttention(DIM, HEADS, num_features=8, redraw=redraw, seed=3).train()
        for _ in range(passes):
            module(torch.randn(1, 12, DIM), (3, 4)).sum().backward()  # backward after a redraw: nothing overwritten
        return module

    first = trained(0, 2).projection
    assert torch.equal(trained(1, 2).projection, first)
    second = trained(2, 2)
    assert not torch.equal(second.projection, first)
    assert torch.equal(second.projection, second.draw(1)) and torch.equal(trained(5, 2).projection, second.draw(2))
    assert torch.equal(trained(5, 2).projection, trained(5, 2).projection)  # reproducible
    assert torch.equal(trained(5, 0).projection, first)  # redraw=0: fixed features
    module = trained(4, 2)
    assert int(module.step) == 4 and "projection" not in module.state_dict()
    fresh = PerformerAttention(DIM, HEADS, num_features=8, redraw=2, seed=3)
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.projection, module.projection)  # rebuilt from seed and step
    module.eval()
    x = torch.randn(2, 12, DIM)
    with torch.no_grad():
        before = module.projection.clone()
        torch.testing.assert_close(module(x, (3, 4)), module(x, (3, 4)), atol=0, rtol=0)
    assert torch.equal(module.projection, before) and int(module.step) == 4  # eval never redraws


# --------------------------------------------------------------------------------------------------------- routing
def naive_routing(q, k, hw, regions, topk):
    """BiFormer's selection with Python lists: region means (all heads), affinities, own region + best others."""
    h, w = hw
    rh, rw = -(-h // regions), -(-w // regions)
    members = {r: [] for r in range(regions * regions)}
    for y in range(h):
        for x in range(w):
            members[(y // rh) * regions + x // rw].append(y * w + x)
    region_of = {t: r for r, ts in members.items() for t in ts}
    masks = []
    for b in range(q.shape[0]):
        qb, kb = q[b].double().transpose(0, 1).flatten(1), k[b].double().transpose(0, 1).flatten(1)  # [N, heads*d]
        mean_q = {r: qb[ts].mean(0) for r, ts in members.items() if ts}
        mean_k = {r: kb[ts].mean(0) for r, ts in members.items() if ts}
        chosen = {}
        for r in mean_q:
            others = sorted((s for s in mean_k if s != r), key=lambda s: -float(mean_q[r] @ mean_k[s]))
            chosen[r] = {r, *others[:topk - 1]}
        n = h * w
        masks.append(torch.tensor([[region_of[j] in chosen[region_of[i]] for j in range(n)] for i in range(n)]))
    return torch.stack(masks)


ROUTING_CASES = [((8, 8), 4, 3), ((10, 7), 3, 2), ((5, 5), 4, 4), ((6, 9), 2, 1), ((9, 9), 3, 5)]


@pytest.mark.parametrize(("hw", "regions", "topk"), ROUTING_CASES)
def test_routing_selection_matches_loops_and_output_is_exact_under_its_mask(hw, regions, topk):
    n = hw[0] * hw[1]
    q, k, v = _leaves(2, HEADS, n, 8)
    out, selected = routing_attention(q, k, v, hw, regions, topk)
    mask = routing_mask(selected, hw, regions)[:, None]
    assert torch.equal(mask[:, 0], naive_routing(q.detach(), k.detach(), hw, regions, topk))
    assert mask.diagonal(dim1=-2, dim2=-1).all() and not mask.all()
    assert (reference_attention(q, k, v, mask) - reference_attention(q, k, v)).abs().max() > 1e-3
    _assert_same(out, [q, k, v], lambda *t: reference_attention(*t, mask))


@pytest.mark.parametrize(("hw", "regions"), [((8, 8), 2), ((7, 5), 3), ((5, 5), 4)])  # 5x5 / 4: 7 padding-only regions
def test_routing_to_every_region_is_full_attention(hw, regions):
    q, k, v = _leaves(1, HEADS, hw[0] * hw[1], 8)
    out, _ = routing_attention(q, k, v, hw, regions, regions * regions)
    _assert_same(out, [q, k, v], reference_attention)


def test_routing_module_returns_the_mask_it_used():
    module = RoutingAttention(DIM, HEADS, regions=3, topk=2).eval()
    x = torch.randn(2, 7 * 8, DIM)
    out, mask = module(x, (7, 8), return_mask=True)
    assert mask.shape == (2, HEADS, 56, 56)
    q, k, v = module.split_heads(x)
    assert torch.equal(mask[:, 0], naive_routing(q.detach(), k.detach(), (7, 8), 3, 2))  # the mask it used is BiFormer's
    torch.testing.assert_close(out, module.merge_heads(reference_attention(q, k, v, mask).float()), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, module(x, (7, 8)), atol=0, rtol=0)


@pytest.mark.parametrize("hw", [(24, 24), (23, 21)])
def test_routing_never_builds_the_n_by_n_matrix(hw):
    n = hw[0] * hw[1]
    q, k, v = (torch.randn(1, HEADS, n, 8) for _ in range(3))
    with torch.no_grad(), _Largest() as mode:
        routing_attention(q, k, v, hw, regions=4, topk=2)
    assert mode.fused_keys == [2 * math.ceil(hw[0] / 4) * math.ceil(hw[1] / 4)]  # topk regions' keys per query
    assert mode.largest < n * n / 2
