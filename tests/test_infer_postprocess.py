"""Post-processing: the batched version against a slow per-image reference, and its limits."""

from __future__ import annotations

import importlib

import pytest
import torch
from torchvision.ops import batched_nms, box_iou, nms

from yolonas.infer.postprocess import PREDICT_NMS, VAL_NMS, NMSConfig, postprocess

# The module itself: `yolonas.infer.postprocess` the attribute is the function the package re-exports.
POSTPROCESS = importlib.import_module("yolonas.infer.postprocess")


def reference(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig) -> list[torch.Tensor]:
    """One image at a time, written the plain way (super-gradients' PPYoloE callback)."""
    out = []
    for bx, sc in zip(boxes, scores):
        if cfg.multi_label:
            i, j = (sc > cfg.score_threshold).nonzero(as_tuple=True)
            cb, cs, cl = bx[i], sc[i, j], j
        else:
            best, label = sc.max(dim=1)
            keep = best >= cfg.score_threshold
            cb, cs, cl = bx[keep], best[keep], label[keep]
        if len(cs) > cfg.top_k:
            top = cs.topk(cfg.top_k).indices
            cb, cs, cl = cb[top], cs[top], cl[top]
        keep = nms(cb, cs, cfg.iou_threshold) if cfg.class_agnostic else batched_nms(cb, cs, cl, cfg.iou_threshold)
        keep = keep[:cfg.max_detections]
        out.append(torch.cat([cb[keep], cs[keep, None], cl[keep, None].float()], dim=1))
    return out


def _by_score(d: torch.Tensor) -> torch.Tensor:
    return d[d[:, 4].argsort(descending=True, stable=True)]


def _predictions(b: int = 3, n: int = 600, c: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes clustered around a few objects (so NMS has work to do) and sparse, skewed scores."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(b, 12, 2, generator=g) * 300
    pick = torch.randint(0, 12, (b, n), generator=g)
    xy = centres.gather(1, pick[..., None].expand(b, n, 2)) + torch.randn(b, n, 2, generator=g) * 6
    wh = 20 + torch.rand(b, n, 2, generator=g) * 40
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)
    scores = torch.rand(b, n, c, generator=g) ** 4
    return boxes, scores


CONFIGS = [
    PREDICT_NMS,
    VAL_NMS,
    NMSConfig(score_threshold=0.05, multi_label=False),
    NMSConfig(score_threshold=0.05, class_agnostic=True),
    NMSConfig(score_threshold=0.01, top_k=50, max_detections=20),
    NMSConfig(score_threshold=0.01, iou_threshold=0.3, top_k=5000, max_detections=1000, multi_label=False,
              class_agnostic=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_matches_per_image_reference(cfg):
    boxes, scores = _predictions()
    got, want = postprocess(boxes, scores, cfg), reference(boxes, scores, cfg)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert g.shape[1] == 6 and g.dtype == torch.float32
        torch.testing.assert_close(_by_score(g), _by_score(w))
    assert sum(len(g) for g in got) > 0  # the comparison saw real detections


def test_limits_hold():
    boxes, scores = _predictions(n=2000, c=10)
    cfg = NMSConfig(score_threshold=0.2, iou_threshold=0.9, top_k=40, max_detections=25)
    for det in postprocess(boxes, scores, cfg):
        assert len(det) == 25  # plenty of candidates: truncated at max_detections
        assert (det[:, 4] > 0.2).all()
        assert (det[:, 4].diff() <= 0).all()  # best first
    # top_k bounds what reaches NMS: with max_detections above it, at most top_k survive.
    for det in postprocess(boxes, scores, NMSConfig(score_threshold=0.0, iou_threshold=1.0, top_k=30,
                                                  max_detections=300)):
        assert len(det) == 30


def test_top_k_keeps_the_best_scores():
    boxes, scores = _predictions(b=1)
    det = postprocess(boxes, scores, NMSConfig(score_threshold=0.0, iou_threshold=1.0, top_k=10))[0]
    assert torch.allclose(det[:, 4], scores.flatten().topk(10).values)


def test_nothing_above_threshold_gives_empty_tensors():
    boxes, scores = _predictions()
    out = postprocess(boxes, scores * 0.01, PREDICT_NMS)
    assert [d.shape for d in out] == [(0, 6)] * 3


def test_class_aware_versus_agnostic():
    # Two identical boxes, best class differing: per-class NMS keeps both, class-agnostic NMS keeps one.
    boxes = torch.tensor([[[10.0, 10.0, 50.0, 50.0], [10.0, 10.0, 50.0, 50.0]]])
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8]]])
    aware = postprocess(boxes, scores, NMSConfig(score_threshold=0.5))[0]
    agnostic = postprocess(boxes, scores, NMSConfig(score_threshold=0.5, class_agnostic=True))[0]
    assert aware[:, 5].tolist() == [0.0, 1.0]
    assert agnostic[:, 4:].tolist() == [[pytest.approx(0.9), 0.0]]


def test_multi_label_gives_one_box_several_classes():
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 20.0]]])
    scores = torch.tensor([[[0.6, 0.7, 0.1]]])
    multi = postprocess(boxes, scores, NMSConfig(score_threshold=0.5))[0]
    single = postprocess(boxes, scores, NMSConfig(score_threshold=0.5, multi_label=False))[0]
    assert multi[:, 5].tolist() == [1.0, 0.0] and single[:, 5].tolist() == [1.0]


def test_same_image_same_boxes_whatever_the_batch():
    boxes, scores = _predictions(b=4)
    together = postprocess(boxes, scores, VAL_NMS)
    for i in range(4):
        alone = postprocess(boxes[i:i + 1], scores[i:i + 1], VAL_NMS)[0]
        assert torch.equal(alone, together[i])


def test_nms_actually_suppresses():
    boxes, scores = _predictions(b=1)
    det = postprocess(boxes, scores, NMSConfig(score_threshold=0.01))[0]
    for cls in det[:, 5].unique():
        same = det[det[:, 5] == cls, :4]
        iou = box_iou(same, same).fill_diagonal_(0)
        assert (iou <= 0.7).all()


def test_half_precision_inputs():
    boxes, scores = _predictions(b=1)
    out = postprocess(boxes.half(), scores.half(), NMSConfig(score_threshold=0.05))[0]
    assert out.dtype == torch.float32 and len(out) > 0


def _topk_select(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig):
    """The first select_candidates, kept verbatim: one top-k over all B x (N * C) scores, then the threshold."""
    b, n, c = scores.shape
    if cfg.multi_label:
        k = min(cfg.top_k, n * c)
        top_scores, flat_idx = scores.reshape(b, n * c).topk(k, dim=1)
        anchor, labels = flat_idx.div(c, rounding_mode="floor"), flat_idx.remainder(c)
        valid = top_scores > cfg.score_threshold
    else:
        best, best_label = scores.max(dim=2)
        k = min(cfg.top_k, n)
        top_scores, anchor = best.topk(k, dim=1)
        labels = best_label.gather(1, anchor)
        valid = top_scores >= cfg.score_threshold
    top_boxes = boxes.gather(1, anchor.unsqueeze(-1).expand(b, k, 4))
    return top_boxes.float(), top_scores.float(), labels, valid


def _topk_postprocess(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig) -> list[torch.Tensor]:
    """The first postprocess, kept verbatim: what the current one must equal exactly, order included."""
    top_boxes, top_scores, labels, valid = _topk_select(boxes, scores, cfg)
    out = []
    for i, m in enumerate(valid.sum(dim=1).tolist()):
        bx, sc, lb = top_boxes[i, :m], top_scores[i, :m], labels[i, :m]
        keep = nms(bx, sc, cfg.iou_threshold) if cfg.class_agnostic else batched_nms(bx, sc, lb, cfg.iou_threshold)
        keep = keep[:cfg.max_detections]
        out.append(torch.cat([bx[keep], sc[keep, None], lb[keep, None].to(bx.dtype)], dim=1))
    return out


def _scores(kind: str, b: int, n: int, c: int, seed: int) -> torch.Tensor:
    """sparse: a trained detector (all low, a few confident); distinct: no two equal; ties: few distinct values."""
    g = torch.Generator().manual_seed(seed)
    if kind == "sparse":
        scores = torch.rand(b, n, c, generator=g) * 0.01
        hot = torch.rand(b, n, c, generator=g) < 25 / (n * c)
        return torch.where(hot, 0.25 + 0.75 * torch.rand(b, n, c, generator=g), scores)
    if kind == "distinct":  # a random permutation of distinct values, skewed low
        return (torch.randperm(b * n * c, generator=g).double() / (b * n * c)).pow(12).float().reshape(b, n, c)
    if kind == "ties":
        return torch.randint(0, 9, (b, n, c), generator=g).float() / 8
    if kind == "empty":
        return torch.rand(b, n, c, generator=g) * 0.2
    raise ValueError(kind)


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)  # bit for bit (NaN scores included)


@pytest.mark.parametrize("kind", ["sparse", "distinct", "ties", "empty"])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("class_agnostic", [True, False])
@pytest.mark.parametrize("max_passing", [POSTPROCESS.MAX_PASSING, 1.0])  # 1.0: picked out however many pass
def test_identical_to_the_full_topk_version(monkeypatch, kind, b, multi_label, class_agnostic, max_passing):
    monkeypatch.setattr(POSTPROCESS, "MAX_PASSING", max_passing)
    boxes, _ = _predictions(b=b, n=900, c=7, seed=3)
    scores = _scores(kind, b, 900, 7, seed=4)
    for threshold, top_k in [(0.25, 1000), (0.01, 1000), (0.3, 40), (0.0, 5)]:
        cfg = NMSConfig(score_threshold=threshold, top_k=top_k, max_detections=30, multi_label=multi_label,
                        class_agnostic=class_agnostic)
        _assert_same(postprocess(boxes, scores, cfg), _topk_postprocess(boxes, scores, cfg))


def _forbid_full_topk(monkeypatch) -> None:
    def full_topk(*args):
        raise AssertionError("the full top-k ran")
    monkeypatch.setattr(POSTPROCESS, "_select_topk", full_topk)


@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("n, c", [(8400, 80), (2100, 7)])
def test_few_passing_scores_skip_the_full_topk(monkeypatch, multi_label, n, c):
    boxes, _ = _predictions(b=2, n=n, c=c, seed=5)
    for kind, cfg in [("sparse", PREDICT_NMS), ("distinct", NMSConfig(score_threshold=0.6, top_k=50))]:
        cfg = NMSConfig(**{**cfg.__dict__, "multi_label": multi_label})
        scores = _scores(kind, 2, n, c, seed=6)
        want = _topk_postprocess(boxes, scores, cfg)
        with monkeypatch.context() as m:
            _forbid_full_topk(m)
            got = postprocess(boxes, scores, cfg)
        _assert_same(got, want)
        assert sum(len(d) for d in got) > 0


def test_ties_and_nan_take_the_full_topk_and_match_it(monkeypatch):
    boxes, _ = _predictions(b=2, n=300, c=5, seed=7)
    calls = []
    full_topk = POSTPROCESS._select_topk
    monkeypatch.setattr(POSTPROCESS, "_select_topk", lambda *a: calls.append(1) or full_topk(*a))
    tied = _scores("sparse", 2, 300, 5, seed=8)
    tied[1, 10, 2] = tied[1, 20, 4] = 0.75  # two candidates with one score: topk's own order decides
    boundary = _scores("distinct", 2, 300, 5, seed=9)
    top = boundary[0].flatten().topk(11).values
    boundary[0][boundary[0] == top[10]] = top[9]  # equal 10th and 11th scores: which one is in the top 10?
    nan = _scores("sparse", 2, 300, 5, seed=10)
    nan[0, 3, 1] = float("nan")
    for scores, cfg in [(tied, PREDICT_NMS), (boundary, NMSConfig(score_threshold=0.0, top_k=10)), (nan, PREDICT_NMS)]:
        calls.clear()
        _assert_same(postprocess(boxes, scores, cfg), _topk_postprocess(boxes, scores, cfg))
        assert calls == [1]


def test_many_passing_scores_take_the_full_topk(monkeypatch):
    boxes, scores = _predictions(b=1, n=600, c=6)
    calls = []
    full_topk = POSTPROCESS._select_topk
    monkeypatch.setattr(POSTPROCESS, "_select_topk", lambda *a: calls.append(1) or full_topk(*a))
    _assert_same(postprocess(boxes, scores, VAL_NMS), _topk_postprocess(boxes, scores, VAL_NMS))
    assert calls == [1]  # ~70% of scores pass 0.01 here: picking them out would cost more than the top-k
