"""Learned-pattern attention (clustering, Sinkhorn, linear, global tokens) vs independent float64 references.

Every routing, sorting and selection decision (k-means assignment and centroid EMA, LSH buckets, the sort-and-chunk
layout, Sinkhorn block summaries, normalisation and block choice) is recomputed here with the loops / different
formulas of ``tests/reference.py``, and outputs and gradients are compared with dense float64 attention under the
mask built from *those* decisions, never under the mask a module reports about itself.
"""

from __future__ import annotations

import math

import onnxruntime as ort
import pytest
import torch

from reference import (
    naive_block_means,
    naive_cluster_mask,
    naive_kmeans_ids,
    naive_kmeans_update,
    naive_local,
    naive_lsh_ids,
    naive_routing_vectors,
    naive_sinkhorn,
    naive_sinkhorn_attention,
    naive_sinkhorn_mask,
    reference_attention,
)
from yolo_attn.attention.cluster import ROUTERS, ClusterAttention, cluster_attention, cluster_mask
from yolo_attn.attention.functional import attend
from yolo_attn.attention.linear import LinearAttention, linear_attention
from yolo_attn.attention.sinkhorn import (
    SinkhornAttention,
    block_summaries,
    log_sinkhorn,
    sinkhorn_attention,
    sinkhorn_mask,
)
from yolo_attn.attention.tokens import GlobalTokenAttention

SIZES = [(5, 7), (8, 8), (13, 10)]
DIM, HEADS = 32, 4
dense_reference = reference_attention


def linear_reference(q, k, v):
    """Explicit N x N normalized elu+1 kernel weights, float64."""
    phi_q, phi_k = torch.nn.functional.elu(q.double()) + 1, torch.nn.functional.elu(k.double()) + 1
    weights = phi_q @ phi_k.transpose(-2, -1)
    return (weights / weights.sum(-1, keepdim=True)) @ v.double()


def _leaves(module, x):
    return [t.detach().clone().requires_grad_(True) for t in module.split_heads(x)]


def _margin(scores: torch.Tensor) -> float:
    """Smallest gap between the best and the second-best score along the last dim (decisions are not near-ties)."""
    top = scores.detach().topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def expected_cluster_ids(module: ClusterAttention, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Routing decided independently: k-means by Euclidean distance with loops, LSH by the largest |coordinate|."""
    r = naive_routing_vectors(q, k)
    if module.router == "kmeans":
        unit_r = r / r.norm(dim=-1, keepdim=True)
        sims = torch.einsum("bhnd,hkd->bhnk", unit_r, torch.nn.functional.normalize(module.centroids.double(), dim=-1))
        assert _margin(sims) > 1e-4  # no near-ties: float32 and float64 must agree on every decision
        return naive_kmeans_ids(r, module.centroids)
    assert _margin(torch.einsum("bhnd,hdk->bhnk", r, module.rotations.double()).abs()) > 1e-4
    return naive_lsh_ids(r, module.rotations)


def expected_sinkhorn(module: SinkhornAttention, q: torch.Tensor, k: torch.Tensor):
    """Block logits from loop block means and the sort net's weights, Sinkhorn in probability space, argmax choice."""
    sq, sk = naive_block_means(q, module.block_size), naive_block_means(k, module.block_size)
    w, b = module.sort_net.weight.double(), module.sort_net.bias.double()
    logits = (sq @ w.T + b) @ sk.transpose(-2, -1) / math.sqrt(q.shape[-1])
    p = naive_sinkhorn(logits, module.n_iters, module.temperature)
    assert _margin(p) > 1e-4
    return logits, p, p.argmax(-1)


def expected_mask(module, q, k) -> torch.Tensor:
    """The mask the module must use, from the independent decisions."""
    n = q.shape[2]
    if isinstance(module, ClusterAttention):
        return naive_cluster_mask(expected_cluster_ids(module, q, k), module.num_clusters)
    return naive_sinkhorn_mask(expected_sinkhorn(module, q, k)[2], n, module.block_size)


def sharp_sinkhorn(**kwargs) -> SinkhornAttention:
    """A Sinkhorn module whose sorting net is scaled up (weights x 20): at initialisation ``P`` is nearly uniform
    (entries 0.19-0.21, block choices within 1e-5 of a tie); scaled, every choice is clear in float32 and float64."""
    module = SinkhornAttention(DIM, HEADS, **{"block_size": 8, **kwargs})
    with torch.no_grad():
        module.sort_net.weight.mul_(20.0)
    return module


def _cluster_core(module, q, k, v):
    ids = module.route(q, k)
    return cluster_attention(q, k, v, ids, module.num_clusters), cluster_mask(ids, module.num_clusters)


def _sinkhorn_core(module, q, k, v):
    log_p = log_sinkhorn(module.sort_logits(q, k), module.n_iters, module.temperature).detach()
    out, choice = sinkhorn_attention(q, k, v, log_p, module.block_size)
    return out, sinkhorn_mask(choice, q.shape[2], module.block_size)


MASKED = {
    "kmeans": (lambda: ClusterAttention(DIM, HEADS, num_clusters=4, router="kmeans"), _cluster_core),
    "lsh": (lambda: ClusterAttention(DIM, HEADS, num_clusters=4, router="lsh", seed=3), _cluster_core),
    "sinkhorn": (sharp_sinkhorn, _sinkhorn_core),
}


def _assert_matches_reference(out, leaves, reference):
    """Output and d/d(leaves) of ``out`` equal those of ``reference(*float64 leaves)`` within 1e-5."""
    leaves64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference(*leaves64)
    torch.testing.assert_close(out.double(), ref.detach(), atol=1e-5, rtol=0)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad.to(out.dtype))
    expected = torch.autograd.grad(ref, leaves64, grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("variant", sorted(MASKED))
def test_masked_core_equals_reference_under_independent_mask(variant, batch, hw):
    make, core = MASKED[variant]
    module = make().eval()
    x = torch.randn(batch, hw[0] * hw[1], DIM)
    q, k, v = _leaves(module, x)
    mask = expected_mask(module, q, k)
    out, reported = core(module, q, k, v)
    n = hw[0] * hw[1]
    assert mask.shape == (batch, HEADS, n, n)
    assert torch.equal(reported, mask)  # what the module says it used is what it had to use
    assert mask.diagonal(dim1=-2, dim2=-1).all()  # every query attends at least itself
    assert not mask.all()  # the pattern is sparse ...
    full = dense_reference(q, k, v)
    ref = dense_reference(q, k, v, mask)
    assert (ref - full).abs().max() > 1e-3  # ... and it changes the output (non-vacuity)
    _assert_matches_reference(out, [q, k, v], lambda *qkv: dense_reference(*qkv, mask))


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("hw", [(5, 7), (13, 10)])
def test_routing_matches_independent_computation(router, hw):
    """Cluster ids equal the independent routing, every bucket family is used, and the sort layout agrees."""
    module = ClusterAttention(DIM, HEADS, num_clusters=4, router=router, seed=3).eval()
    q, k, _ = module.split_heads(torch.randn(2, hw[0] * hw[1], DIM))
    ids = expected_cluster_ids(module, q, k)
    assert torch.equal(module.route(q, k), ids)
    assert ids.unique().tolist() == [0, 1, 2, 3]  # non-vacuity: every cluster / bucket (both signs of LSH) occurs
    assert torch.equal(cluster_mask(ids, 4), naive_cluster_mask(ids, 4))


def test_cluster_layout_of_given_ids_matches_sorted_chunks():
    """Hand-made ids (one cluster larger than a chunk, one empty): the chunked core vs the ``sorted`` layout."""
    ids = torch.tensor([[[2, 0, 2, 2, 1, 2, 0, 2, 2, 1, 2]]]).expand(1, 2, -1).contiguous()
    q, k, v = (torch.randn(1, 2, 11, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = naive_cluster_mask(ids, 4)  # sorted positions in chunks of 3: [1 6 4] [9 0 2] [3 5 7] [8 10]
    assert [mask[0, 0, t].nonzero().flatten().tolist() for t in (1, 4, 0, 3, 10)] == [[1, 6], [4], [0, 2], [3, 5, 7],
                                                                                       [8, 10]]
    _assert_matches_reference(cluster_attention(q, k, v, ids, 4), [q, k, v], lambda *qkv: dense_reference(*qkv, mask))


def test_kmeans_ema_update_matches_loops():
    """One training step: the centroids move to the loop EMA of the assigned unit routing vectors; empty ones stay."""
    module = ClusterAttention(DIM, HEADS, num_clusters=8, ema_decay=0.7, seed=5).train()
    x = torch.randn(2, 6, DIM)  # 12 tokens per head for 8 clusters: some clusters stay empty
    q, k, _ = module.split_heads(x)
    before = module.centroids.clone()
    ids = expected_cluster_ids(module, q, k)
    module(x, (2, 3))
    expected = naive_kmeans_update(before, naive_routing_vectors(q, k), ids, 0.7)
    torch.testing.assert_close(module.centroids.double(), expected, atol=1e-6, rtol=0)
    counts = torch.stack([(ids[:, h] == c).sum() for h in range(HEADS) for c in range(8)]).reshape(HEADS, 8)
    assert (counts == 0).any() and (counts > 1).any()  # both branches (and a real mean) are exercised
    assert ((module.centroids - before).norm(dim=-1) > 1e-3).eq(counts > 0).all()


def test_sinkhorn_summaries_normalisation_and_choice_match_independent_computation():
    module = sharp_sinkhorn(n_iters=5, temperature=0.6)
    q, k, _ = module.split_heads(torch.randn(2, 35, DIM))  # 5 blocks, the last one holds 3 tokens
    torch.testing.assert_close(block_summaries(q, 8).double(), naive_block_means(q, 8), atol=1e-6, rtol=0)
    logits, p, choice = expected_sinkhorn(module, q, k)
    torch.testing.assert_close(module.sort_logits(q, k).double(), logits, atol=1e-5, rtol=0)
    log_p = log_sinkhorn(module.sort_logits(q, k), module.n_iters, module.temperature)
    torch.testing.assert_close(log_p.exp().double(), p, atol=1e-5, rtol=0)
    with torch.no_grad():
        _, got = sinkhorn_attention(q, k, q, log_p, 8)
    assert torch.equal(got, choice)
    assert (choice != torch.arange(5)).any() and (choice == torch.arange(5)).any()  # picks others and itself


def test_sinkhorn_block_choice_of_a_given_permutation():
    """A hand-made log P: block 0 picks 3, 1 itself, 2 the padded tail block 4, 3 picks 0 and 4 itself."""
    choice = torch.tensor([3, 1, 4, 0, 4])
    log_p = torch.randn(1, 2, 5, 5, dtype=torch.float64) - 5.0
    log_p = log_p.scatter(-1, choice.expand(1, 2, 5)[..., None], 0.0).requires_grad_()
    q, k, v = (torch.randn(1, 2, 35, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, got = sinkhorn_attention(q, k, v, log_p, 8)
    assert torch.equal(got, choice.expand(1, 2, 5))
    # the straight-through gradient to log P: only at the picked entries of blocks that pick another block
    log_p64 = log_p.detach().clone().requires_grad_()
    ref = naive_sinkhorn_attention(q.detach(), k.detach(), v.detach(), log_p64, got, 8)
    grad = torch.randn_like(ref)
    (got_grad,) = torch.autograd.grad(out, log_p, grad, retain_graph=True)
    (want_grad,) = torch.autograd.grad(ref, log_p64, grad)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-9, rtol=0)
    assert (want_grad != 0).sum() == 2 * 3 and (want_grad[..., [1, 4], [1, 4]] == 0).all()
    mask = naive_sinkhorn_mask(got, 35, 8)
    _assert_matches_reference(out, [q, k, v], lambda *qkv: dense_reference(*qkv, mask))


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("batch", [1, 2])
def test_linear_core_equals_reference(batch, hw):
    q, k, v = (torch.randn(batch, HEADS, hw[0] * hw[1], 8, requires_grad=True) for _ in range(3))
    out = linear_attention(q, k, v)
    ref = linear_reference(q, k, v)
    assert (ref - dense_reference(q, k, v)).abs().max() > 1e-3  # a different kernel than softmax
    _assert_matches_reference(out, [q, k, v], linear_reference)


def test_linear_attention_is_stable_for_large_inputs():
    q, k, v = (torch.randn(1, 2, 64, 8) * 50 for _ in range(3))
    out = linear_attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), linear_reference(q, k, v), atol=1e-3, rtol=1e-4)


def with_global_tokens(base: torch.Tensor, g: int) -> torch.Tensor:
    """Dense spec written here independently: tokens first, token rows and token columns all True."""
    n = base.shape[0]
    mask = torch.ones(g + n, g + n, dtype=torch.bool)
    mask[g:, g:] = base
    return mask


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("base", "window", "dilation"), [("local", 3, 1), ("dilated", 3, 2)])
@pytest.mark.parametrize("g", [0, 2])
def test_global_token_path_equals_reference(g, base, window, dilation, batch, hw):
    """The executor GlobalTokenAttention runs (``attend(..., "global")``) vs the dense spec written here."""
    n = hw[0] * hw[1]
    q, k, v = (torch.randn(batch, HEADS, g + n, 8, requires_grad=True) for _ in range(3))
    spec = naive_local(*hw, window, dilation)
    mask = with_global_tokens(spec, g)
    assert mask.any(-1).all() and not mask.all()
    options = {"dilation": dilation} if base == "dilated" else {}
    out = attend(q, k, v, "global", hw=hw, num_global_tokens=g, base=base, window=window, **options)
    assert (dense_reference(q, k, v, mask) - dense_reference(q, k, v)).abs().max() > 1e-3  # non-vacuity
    _assert_matches_reference(out, [q, k, v], lambda *qkv: dense_reference(*qkv, mask))


def test_global_tokens_zero_is_the_base_pattern_and_tokens_matter():
    x = torch.randn(2, 35, DIM)
    torch.manual_seed(5)
    plain = GlobalTokenAttention(DIM, HEADS, num_global_tokens=0, window=3).eval()
    torch.manual_seed(5)
    tokens = GlobalTokenAttention(DIM, HEADS, num_global_tokens=2, window=3).eval()
    assert plain.global_tokens.shape == (0, DIM)
    q, k, v = plain.split_heads(x)
    expected = plain.merge_heads(dense_reference(q, k, v, naive_local(5, 7, 3)).float())
    torch.testing.assert_close(plain(x, (5, 7)), expected, atol=1e-5, rtol=0)
    spatial, toks = tokens(x, (5, 7), return_tokens=True)
    assert spatial.shape == x.shape and toks.shape == (2, 2, DIM)
    assert (spatial - plain(x, (5, 7))).abs().max() > 1e-4
    xt = torch.cat([tokens.global_tokens.expand(2, -1, -1), x], dim=1)
    mask = with_global_tokens(naive_local(5, 7, 3), 2)
    ref = tokens.merge_heads(dense_reference(*tokens.split_heads(xt), mask).float())
    torch.testing.assert_close(torch.cat([toks, spatial], dim=1), ref, atol=1e-5, rtol=0)


ALL = {
    **{name: make for name, (make, _) in MASKED.items()},
    "linear": lambda: LinearAttention(DIM, HEADS),
    "global": lambda: GlobalTokenAttention(DIM, HEADS, num_global_tokens=2, window=3),
}


@pytest.mark.parametrize("name", sorted(set(ALL) - {"global"}))
def test_module_forward_matches_reference_under_independent_mask(name):
    module = ALL[name]().eval()
    hw = (5, 7)
    x = torch.randn(2, 35, DIM)
    q, k, v = module.split_heads(x)
    if name == "linear":
        out, ref = module(x, hw), linear_reference(q, k, v)
    else:
        out, reported = module(x, hw, return_mask=True)
        mask = expected_mask(module, q, k)
        assert torch.equal(reported, mask)
        ref = dense_reference(q, k, v, mask)
    torch.testing.assert_close(out, module.merge_heads(ref.float()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", sorted(ALL))
def test_shapes_and_every_parameter_gets_a_gradient(name, batch, hw):
    module = ALL[name]().train()
    x = torch.randn(batch, hw[0] * hw[1], DIM, requires_grad=True)
    out = module(x, hw)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ALL))
def test_eval_is_deterministic_and_train_without_dropout_matches_eval(name):
    module = ALL[name]()
    x = torch.randn(2, 64, DIM)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    module.eval()
    with torch.no_grad():
        first, second = module(x, (8, 8)), module(x, (8, 8))
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        for key, value in module.state_dict().items():  # eval never touches buffers
            torch.testing.assert_close(value, state[key], atol=0, rtol=0)
        train_out = module.train()(x, (8, 8))  # routing uses the centroids as they were before the EMA step
    torch.testing.assert_close(train_out, first, atol=1e-6, rtol=0)


def test_kmeans_centroids_ema_update_is_deterministic_and_training_only():
    def run(steps: int) -> torch.Tensor:
        torch.manual_seed(1)
        module = ClusterAttention(DIM, HEADS, num_clusters=4, ema_decay=0.9, seed=7).train()
        for _ in range(steps):
            module(torch.randn(2, 35, DIM), (5, 7))
        return module.centroids

    start, once, again = run(0), run(3), run(3)
    torch.testing.assert_close(once, again, atol=0, rtol=0)
    assert (once - start).abs().max() > 1e-4
    torch.testing.assert_close(once.norm(dim=-1), torch.ones(HEADS, 4))
    assert "centroids" in ClusterAttention(DIM, HEADS).state_dict()


def test_dropout_only_in_training():
    module = ClusterAttention(DIM, HEADS, num_clusters=2, attn_drop=0.5, proj_drop=0.5, router="lsh")
    x = torch.randn(1, 35, DIM)
    with torch.no_grad():
        assert not torch.equal(module.train()(x, (5, 7)), module(x, (5, 7)))
        torch.testing.assert_close(module.eval()(x, (5, 7)), module(x, (5, 7)), atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning",
                            "ignore:yolo_attn. 'global' attention is traced:UserWarning")
@pytest.mark.parametrize("name", sorted(ALL))
def test_trace_matches(name):
    module = ALL[name]().eval()
    x = torch.randn(2, 35, DIM)
    with torch.no_grad():
        expected = module(x, (5, 7))
        traced = torch.jit.trace(_Fixed(module, (5, 7)).eval(), (x,))
        torch.testing.assert_close(traced(x), expected, atol=1e-6, rtol=0)
        x2 = torch.randn(2, 35, DIM)  # the trace is a function of its input, not a recorded constant
        torch.testing.assert_close(traced(x2), module(x2, (5, 7)), atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("name", sorted(ALL))
def test_onnx_export_matches(name, tmp_path):
    module = ALL[name]().eval()
    x = torch.randn(2, 35, DIM)
    with torch.no_grad():
        expected = module(x, (5, 7))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(_Fixed(module, (5, 7)).eval(), (x,), str(path), opset_version=17, dynamo=False,
                      input_names=["x"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)


class _Fixed(torch.nn.Module):
    """Binds ``hw`` so trace / export see a single tensor input."""

    def __init__(self, module: torch.nn.Module, hw: tuple[int, int]) -> None:
        super().__init__()
        self.module, self.hw = module, hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, self.hw)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ClusterAttention(30, 4), r"dim=30 must be divisible by num_heads=4"),
        (lambda: ClusterAttention(DIM, HEADS, router="hash"), r"router='hash'.*\('kmeans', 'lsh'\)"),
        (lambda: ClusterAttention(DIM, HEADS, num_clusters=3, router="lsh"), r"num_clusters=3"),
        (lambda: ClusterAttention(DIM, HEADS, ema_decay=1.0), r"ema_decay=1.0"),
        (lambda: SinkhornAttention(DIM, HEADS, temperature=0.0), r"temperature=0.0"),
        (lambda: SinkhornAttention(DIM, HEADS, block_size=0), r"block_size=0"),
        (lambda: LinearAttention(DIM, HEADS, attn_drop=0.1), r"attn_drop=0.1.*allowed: 0.0"),
        (lambda: LinearAttention(DIM, HEADS, proj_drop=1.5), r"proj_drop=1.5"),
        (lambda: GlobalTokenAttention(DIM, HEADS, base="axial"), r"base='axial'"),
        (lambda: GlobalTokenAttention(DIM, HEADS, num_global_tokens=-1), r"num_global_tokens=-1"),
    ],
)
def test_constructor_errors_name_the_bad_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [ClusterAttention, SinkhornAttention, LinearAttention, GlobalTokenAttention])
def test_unknown_kwargs_and_bad_inputs_are_rejected(cls):
    with pytest.raises(TypeError):
        cls(DIM, HEADS, bogus_option=3)
    module = cls(DIM, HEADS)
    with pytest.raises(ValueError, match=r"x.shape\[1\]=35 does not match hw=\(6, 6\)"):
        module(torch.randn(1, 35, DIM), (6, 6))
    with pytest.raises(ValueError, match=r"C = dim = 32"):
        module(torch.randn(1, 35, 16), (5, 7))


def test_routers_constant():
    assert ROUTERS == ("kmeans", "lsh")
