"""Transfer without a trained checkpoint: the block-level stock load, the per-layer report and the family / scale
check, each against what is computed here from the state dicts and the stock modules (random weights; seconds).

``tests/test_transfer.py`` runs the same paths end to end from a trained, input-sensitive stock checkpoint; these
tests pin each decision on its own so that a wrong one fails fast.
"""

from __future__ import annotations

import copy

import pytest
import torch
from ultralytics.nn.modules import C3
from ultralytics.nn.tasks import DetectionModel

import yolo_attn
from yolo_attn.blocks import BoTBlock, C3Attn, gains
from yolo_attn.integration import load_pretrained
from yolo_attn.transfer import TransferError, check_fits


def _randomise_norms(module: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm affines and statistics away from (1, 0, 0, 1), so that a stock C3's output is not trivial."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return module.eval()


@pytest.mark.parametrize("block_cls", [C3Attn, BoTBlock])
def test_block_loaded_from_a_stock_c3_computes_exactly_that_c3(block_cls):
    stock = _randomise_norms(C3(16, 32, 2))
    block = block_cls(16, 32, 2, "local", {"window": 3, "heads": 2}).eval()
    assert gains(block) and all(torch.equal(g, torch.ones_like(g)) for g in gains(block))  # from scratch: 1
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        assert (block(x) - stock(x)).abs().max() > 1e-2  # before loading: another computation
    result = block.load_state_dict(stock.state_dict(), strict=False)
    assert not result.unexpected_keys and result.missing_keys  # the attention tensors are the only new ones
    assert all(not g.detach().any() for g in gains(block))  # a stock load zeroes every gain ...
    with torch.no_grad():
        torch.testing.assert_close(block(x), stock(x), atol=0, rtol=0)  # ... so the block is that C3, exactly


def test_own_checkpoint_and_a_numeric_layer_scale_keep_their_gains():
    mine = C3Attn(16, 32, 1, "local", {"window": 3, "heads": 2})
    with torch.no_grad():
        for g in gains(mine):
            g.fill_(0.5)
    again = C3Attn(16, 32, 1, "local", {"window": 3, "heads": 2})
    again.load_state_dict(mine.state_dict())  # our own checkpoint: the branches are in it
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in gains(again))
    fixed = C3Attn(16, 32, 1, "local", {"window": 3, "heads": 2, "layer_scale": 0.3})
    fixed.load_state_dict(C3(16, 32, 1).state_dict(), strict=False)  # a number is kept, even on a stock load
    assert all(torch.allclose(g, torch.full_like(g, 0.3)) for g in gains(fixed))


@pytest.fixture(scope="module")
def stock_5cls() -> torch.nn.Module:
    """ultralytics' own YOLOv5n with 5 classes (the checkpoint layout of yolov5nu.pt), random weights."""
    torch.manual_seed(3)
    return _randomise_norms(DetectionModel("yolov5n.yaml", nc=5, verbose=False))


@pytest.fixture(scope="module")
def local_model() -> torch.nn.Module:
    """yolov5n-local (80 classes) from scratch; tests that load into it get their own copy."""
    return yolo_attn.YOLO("yolov5n-local.yaml").model


def _layer_keys(sd: dict, i: int) -> list[str]:
    return [k for k in sd if k.split(".")[:2] == ["model", str(i)]]


def test_report_counts_every_layer_as_the_state_dicts_say(stock_5cls, local_model):
    """ultralytics' YOLOv5n (5 classes) into yolov5n-local (80 classes): per layer, transferred / new / dropped
    counted here by name and shape; the transferred tensors really arrived."""
    source, model = stock_5cls, copy.deepcopy(local_model)
    report = load_pretrained(model, source, "weights=stock-5cls.pt", verbose=False)
    src, dst = source.state_dict(), model.state_dict()
    assert len(report.layers) == len(model.model) > 10 and (report.n_source, report.n_target) == (len(src), len(dst))
    moved_all = 0
    for i, row in enumerate(report.layers):
        mine, theirs = _layer_keys(dst, i), _layer_keys(src, i)
        moved = [k for k in theirs if k in dst and dst[k].shape == src[k].shape]
        assert (row.transferred, row.new, row.dropped) == (len(moved), len(mine) - len(moved),
                                                           len(theirs) - len(moved)), (i, row)
        assert all(torch.equal(dst[k], src[k].to(dst[k].dtype)) for k in moved), i
        assert row.module == type(model.model[i]).__name__ and row.source == type(source.model[i]).__name__
        moved_all += len(moved)
    attn = [r for r in report.layers if r.module == "C3Attn"]
    head = report.layers[-1]
    assert attn and all(r.new > 0 and r.identity is True for r in attn) and report.identity
    assert head.module == "Detect" and head.new > 0 and head.dropped > 0  # class outputs: 80 vs 5
    assert report.transferred == moved_all and report.dropped == sum(r.dropped for r in report.layers)
    assert report.format().startswith(f"Transfer from stock-5cls.pt into yolov5n-local.yaml: {moved_all}/{len(src)} ")


@pytest.mark.parametrize(("other", "needles"), [
    ("yolo11n.yaml", ["another model family", "C3k2"]),
    ("yolov5s.yaml", ["the same layer types at other widths", "scale s vs n"]),
])
def test_checkpoint_of_another_family_or_scale_is_refused(other, needles, stock_5cls, local_model):
    model = local_model
    check_fits(model, stock_5cls, "weights=stock.pt")  # same family and scale (another nc): fits
    with pytest.raises(TransferError) as err:
        check_fits(model, DetectionModel(other, verbose=False), f"weights={other}")
    assert "\n" not in str(err.value) and "does not fit yolov5n-local.yaml" in str(err.value)
    for needle in needles:
        assert needle in str(err.value)
