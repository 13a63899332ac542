"""Blocks: every attention kind inside C3Attn / AttnBlock / BoTBlock, positional encodings, the ViT stem, the blocks'
C3 layout (they augment ultralytics' C3), and YAML argument validation (errors name the layer, the argument and the
allowed values)."""

from __future__ import annotations

import pytest
import torch
import yaml

import yolo_attn  # noqa: F401  (registers the blocks)
from conftest import CONFIGS, REPO
from ultralytics.nn.modules import C3, C3TR
from ultralytics.nn.tasks import DetectionModel
from yolo_attn.attention.posenc import POS_ENCODINGS
from yolo_attn.blocks import AttnBlock, BoTBlock, C3Attn, PatchEmbed, attention_kinds, build_attention
from yolo_attn.integration import YamlConfigError

# options for each kind at the small test sizes (every kind of the core must appear here)
KIND_OPTIONS = {
    "full": {},
    "local": {"window": 3},
    "dilated": {"window": 3, "dilation": 2},
    "local1d": {"window": 4},
    "dilated1d": {"window": 2, "dilation": 3},
    "window": {"window": 4, "shift": True},
    "axial": {},
    "global": {"global_idx": [0, 7], "base": "local", "window": 3},
    "mixed": {"heads": {"local": 2, "dilated": 1, "global": 1}, "window": 3, "dilation": 2},
    "tokens": {"num_global_tokens": 2, "window": 3},
    "cluster": {"num_clusters": 4},
    "sinkhorn": {"block_size": 16},
    "linear": {},
    "area": {"area": 3},
    "reduce": {"ratio": 2},
    "performer": {"num_features": 16},
    "routing": {"regions": 3, "topk": 2},
}


def _grads_ok(block: torch.nn.Module) -> list[str]:
    return [n for n, p in block.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]


def test_every_kind_is_covered():
    assert set(attention_kinds()) == set(KIND_OPTIONS)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
def test_c3attn_every_kind(kind, batch):
    options = KIND_OPTIONS[kind] if kind == "mixed" else {**KIND_OPTIONS[kind], "heads": 4}
    block = C3Attn(16, 64, 2, kind, options)
    x = torch.randn(batch, 16, 9, 11)
    y = block(x)
    assert y.shape == (batch, 64, 9, 11) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert not _grads_ok(block)


@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_positional_encodings(pos):
    block = AttnBlock(32, 32, 1, "local", {"window": 3, "pos": pos})
    y = block(torch.randn(2, 32, 7, 10))
    y.square().mean().backward()
    assert y.shape == (2, 32, 7, 10) and not _grads_ok(block)


def test_pos_changes_output():
    x = torch.randn(1, 16, 6, 6)
    torch.manual_seed(1)
    a = AttnBlock(16, 16, 1, "full", {"pos": "none"}).eval()
    torch.manual_seed(1)
    b = AttnBlock(16, 16, 1, "full", {"pos": "sincos"}).eval()
    assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("kind", ["full", "local", "tokens", "linear"])
def test_bot_block(kind):
    block = BoTBlock(32, 64, 2, kind, KIND_OPTIONS[kind])
    y = block(torch.randn(2, 32, 8, 10))
    y.square().mean().backward()
    assert y.shape == (2, 64, 8, 10) and not _grads_ok(block)


def test_attn_block_any_slot():
    block = AttnBlock(24, 48, 2, "axial", {"mlp_ratio": 1})
    assert block(torch.randn(1, 24, 5, 13)).shape == (1, 48, 5, 13)


def test_patch_embed_is_a_patch_conv():
    pe = PatchEmbed(3, 32, 4)
    conv = pe.proj.conv
    assert conv.kernel_size == conv.stride == (4, 4) and conv.padding == (0, 0)
    assert pe(torch.randn(1, 3, 64, 48)).shape == (1, 32, 16, 12)


@pytest.mark.parametrize("block_cls, options", [(C3Attn, {}), (C3Attn, {"shortcut": False, "depth": 2}),
                                                 (BoTBlock, {}), (BoTBlock, {"shortcut": False})])
def test_block_augments_stock_c3(block_cls, options):
    """Same submodule names and shapes as ultralytics' C3 (n = bottlenecks, shortcut as C3); attention is extra."""
    ours = block_cls(128, 256, 3, "full", options)
    stock = C3(128, 256, 3, options.get("shortcut", True))
    assert isinstance(ours, C3)
    mine, theirs = ours.state_dict(), stock.state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: mine[k].shape for k in ours.stock_keys()}
    branches = ("attn.",) if block_cls is C3Attn else tuple(f"m.{i}.branch." for i in range(3))
    extra = set(mine) - set(theirs)
    assert extra and all(k.startswith(branches) for k in extra)
    assert [b.add for b in ours.m] == [b.add for b in stock.m] == [options.get("shortcut", True)] * 3
    if block_cls is C3Attn:
        assert ours.attn.kind == "full" and len(ours.attn) == options.get("depth", 1)
    x = torch.randn(1, 128, 10, 10)
    assert ours(x).shape == stock(x).shape == (1, 256, 10, 10)


def test_c3attn_split_runs_attention_on_part_of_the_channels():
    block = C3Attn(32, 64, 1, "local", {"window": 3, "split": 0.25, "heads": 2})
    assert block.dim == 8 and block.attn.layers[0].norm1.normalized_shape == (8,)
    x = torch.randn(2, 32, 6, 7)
    hidden = block.m(block.cv1(x))
    seen = {}
    block.attn.register_forward_hook(lambda m, args, out: seen.update(inp=args[0], out=out))
    y = block(x)
    assert y.shape == (2, 64, 6, 7) and torch.equal(seen["inp"], hidden[:, :8])
    assert not torch.equal(seen["out"], seen["inp"])  # the attention changes its channels (gains 1)
    torch.testing.assert_close(y, block.cv3(torch.cat((seen["out"], hidden[:, 8:], block.cv2(x)), 1)))


def test_c3tr_peer_has_the_same_convolutions():
    """C3TR (ultralytics' C3 with transformer layers for bottlenecks) and C3Attn share cv1/cv2/cv3."""
    ours, theirs = C3Attn(128, 256, 3), C3TR(128, 256, 3)
    for a, b in ((ours.cv1, theirs.cv1), (ours.cv2, theirs.cv2), (ours.cv3, theirs.cv3)):
        assert a.conv.weight.shape == b.conv.weight.shape


def test_heads_default_divides_at_every_width():
    for dim in (8, 16, 24, 40, 64, 96, 160, 320, 640):
        _, rest = build_attention(dim, "local", {"window": 3})
        assert dim % rest["heads"] == 0 and rest["heads"] >= 1


def test_mixed_heads_sum():
    _, rest = build_attention(64, "mixed", {"heads": {"local": 2, "dilated": 1, "global": 1}, "window": 3})
    assert rest["heads"] == 4


# ------------------------------------------------------------------------------------------- YAML validation
def _yaml_with(layer13: str, scale: str = "n") -> dict:
    text = (CONFIGS / "yolov5-local.yaml").read_text()
    lines = [layer13 + " # 13" if line.rstrip().endswith("# 13") else line for line in text.splitlines()]
    d = yaml.safe_load("\n".join(lines))
    d["scale"] = scale
    return d


@pytest.mark.parametrize(
    "layer, must_contain",
    [
        ("  - [-1, 1, C3Attn, [512, locl, {window: 7}]]", ["layer 13", "'locl'", "local", "dilated", "window"]),
        ("  - [-1, 1, C3Attn, [512, local, {windw: 7}]]", ["layer 13", "'windw'", "allowed", "window"]),
        ("  - [-1, 1, C3Attn, [512, local, {window: 0}]]", ["layer 13", "window=0", ">= 1"]),
        ("  - [-1, 1, C3Attn, [512, local, {window: 7, heads: 3}]]", ["layer 13", "heads=3", "64"]),
        ("  - [-1, 1, C3Attn, [512, local, window=7]]", ["layer 13", "mapping"]),
        ("  - [-1, 1, C3Attn, [512, local, {pos: rope}]]", ["layer 13", "pos='rope'", "sincos", "cpe"]),
        ("  - [-1, 1, C3Attn, [512, mixed, {heads: {local: 2, foo: 1}}]]", ["layer 13", "'foo'", "local"]),
        ("  - [-1, 1, C3Attn, [512, tokens, {pos: rel}]]", ["layer 13", "pos='rel'", "cpe"]),
        ("  - [-1, 3, C3Attn, [512, local, {shortcut: 0}]]", ["layer 13", "shortcut=0", "true or false"]),
        ("  - [-1, 3, C3Attn, [512, local, {depth: 0}]]", ["layer 13", "depth=0", "int >= 1"]),
        ("  - [-1, 3, C3Attn, [512, local, {split: 1.5}]]", ["layer 13", "split=1.5", "(0, 1]"]),
        ("  - [-1, 3, BoTBlock, [512, full, {split: 0.5}]]", ["layer 13", "'split'", "not used by BoTBlock"]),
        ("  - [-1, 3, C3Attn, [512, local, {layer_scale: -1}]]", ["layer 13", "layer_scale=-1", "auto", ">= 0"]),
        ("  - [-1, 3, C3Attn, [512, local, {shortcut: False, shortcuts: 1}]]", ["layer 13", "'shortcuts'", "shortcut"]),
        ("  - [-1, 1, AttnBlock, [512, local, {shortcut: false}]]", ["layer 13", "'shortcut'", "not used by AttnBlock"]),
        ("  - [-1, 3, BoTBlock, [512, full, {depth: 2}]]", ["layer 13", "'depth'", "not used by BoTBlock"]),
        ("  - [-1, 2, PatchEmbed, [512, 4]]", ["layer 13", "number=2"]),
        ("  - [-1, 1, PatchEmbed, [512, 0]]", ["layer 13", "patch=0"]),
    ],
)
def test_invalid_yaml_fails_at_build_naming_layer_argument_allowed(layer, must_contain):
    with pytest.raises(YamlConfigError) as err:
        DetectionModel(_yaml_with(layer), verbose=False)
    for s in must_contain:
        assert s in str(err.value), f"{s!r} not in: {err.value}"


def test_stride_alias_and_yaml_types_survive():
    d = _yaml_with("  - [-1, 1, C3Attn, [512, stride, {window: 5, dilation: 2, pos: sincos, mlp_ratio: 1.5}]]")
    block = DetectionModel(d, verbose=False).model[13]
    assert block.attn.kind == "dilated" and block.attn.pos_kind == "sincos"


def test_gflops_count_includes_attention_matmuls():
    from yolo_attn.bench.models import count_gflops

    c, h, w = 16, 12, 10
    n = h * w
    block = AttnBlock(3, c, 1, "full", {"pos": "none", "heads": 2}).eval()
    expected = 2 * n * 3 * c  # 1x1 conv
    expected += 2 * n * c * 3 * c + 2 * n * c * c + 2 * (2 * n * c * 2 * c)  # qkv, proj, MLP (ratio 2)
    expected += 2 * 2 * n * n * c  # q k^T and attn v over all heads
    assert count_gflops(block, (h, w)) * 1e9 == pytest.approx(expected)


def _readme_yaml_examples() -> list[str]:
    """The layer lines of the README's "### Examples" YAML block (the documentation a user copies from)."""
    text = (REPO / "README.md").read_text()
    block = text.split("### Examples", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return [line.split(" #")[0].strip() for line in block.strip().splitlines()]


@pytest.mark.parametrize("line", [ln for ln in _readme_yaml_examples() if "PatchEmbed" not in ln])
def test_readme_yaml_examples_build_and_run(line):
    """Every documented example works as written, in the P5 slot of yolov5 (PatchEmbed: see the window config)."""
    cfg = yaml.safe_load((CONFIGS / "yolov5-c3tr.yaml").read_text())
    cfg["backbone"][8] = yaml.safe_load(line)[0]
    cfg["scale"] = "n"
    model = DetectionModel(cfg, verbose=False).eval()
    assert type(model.model[8]).__name__ == cfg["backbone"][8][2]
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 256, 256))[0]
    assert torch.isfinite(y).all()
