"""Checkpoints: our format, super-gradients' layout, strict errors and the verified download."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import threading
from collections import OrderedDict

import pytest
import torch

import yolonas
from yolonas import weights
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_s, yolo_nas_tiny
from yolonas.errors import CheckpointError


def _same_outputs(a, b, size=64):
    x = torch.rand(1, 3, size, size)
    a.eval(), b.eval()
    with torch.no_grad():
        oa, ob = a(x), b(x)
    return torch.equal(oa.cls_logits, ob.cls_logits) and torch.equal(oa.reg_distri, ob.reg_distri)


def test_own_checkpoint_round_trip(tmp_path):
    model = build(yolo_nas_tiny(), class_names=["cat", "dog"])
    model.preprocessing.image_size = (96, 128)
    model.save(tmp_path / "m.pt")
    back = yolonas.load(tmp_path / "m.pt")
    assert back.class_names == ["cat", "dog"]
    assert back.spec == model.spec
    assert back.preprocessing.image_size == (96, 128)
    assert _same_outputs(model, back)
    # Self-describing and safe: plain torch.load with weights_only reads it.
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == weights.FORMAT


@pytest.mark.parametrize("partial", [True, False])
def test_fused_model_round_trip(tmp_path, partial):
    # A partially fused (QAT) or fully fused (deploy) model saves with its fusion state and loads re-fused.
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), 2)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval().fuse(partial=partial)
    model.save(tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["fused"] == ("partial" if partial else "full")
    back = yolonas.load(tmp_path / "m.pt")
    assert back.fusion == model.fusion and _same_outputs(model, back)
    # An unfused checkpoint does not load into a fused model's keys, or the other way round.
    with pytest.raises(CheckpointError, match="missing key|unexpected key"):
        weights.load_state_strict(build(yolo_nas_tiny(), 2), back.state_dict(), "m.pt")


def _sg_file(model, path, nest="ema_net", prefix="module."):
    """A checkpoint in super-gradients' layout: their key names, nested under net / ema_net."""
    state = OrderedDict((prefix + k, v) for k, v in model.state_dict().items())
    torch.save({"net": state if nest == "net" else {}, nest: state, "epoch": 3}, path)


@pytest.mark.parametrize("nest,prefix", [("net", ""), ("ema_net", "module.")])
def test_super_gradients_checkpoint_loads_strictly(tmp_path, nest, prefix):
    torch.manual_seed(0)
    model = build(yolo_nas_s(), 80)
    _sg_file(model, tmp_path / "sg.pth", nest, prefix)
    back = yolonas.load(tmp_path / "sg.pth")
    assert back.spec.name == "yolo_nas_s" and back.num_classes == 80
    assert back.class_names[0] == "person"
    assert back.preprocessing.longest_side == 636  # Deci's COCO evaluation pre-processing
    assert _same_outputs(model, back)


def test_super_gradients_class_count_read_from_shapes(tmp_path):
    model = build(yolo_nas_s(), 3)
    _sg_file(model, tmp_path / "sg3.pth", "net", "")
    assert yolonas.load(tmp_path / "sg3.pth").num_classes == 3


def test_class_count_change_only_when_asked(tmp_path, caplog):
    model = build(yolo_nas_tiny(), 80)
    model.save(tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        back = yolonas.load(tmp_path / "m.pt", num_classes=3)
    assert back.num_classes == 3
    assert "replacing the classification layers" in caplog.text
    kept = {k: v for k, v in back.state_dict().items() if "cls_pred" not in k}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept.items())


def test_other_architecture_fails_naming_the_key(tmp_path):
    model = build(yolo_nas_s(), 80)
    state = model.state_dict()
    state["backbone.stem.conv.branch_3x3.conv.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save({"net": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"backbone\.stem\.conv\.branch_3x3\.conv\.weight.*another architecture"):
        yolonas.load(tmp_path / "bad.pth")
    tiny = build(yolo_nas_tiny(), 80)
    ckpt = weights.read_checkpoint(_saved(tiny, tmp_path / "tiny.pt"))
    ckpt["spec"] = yolo_nas_s().to_dict()
    torch.save(ckpt, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="shape") as err:
        yolonas.load(tmp_path / "mixed.pt")
    assert "\n" not in str(err.value)


def _saved(model, path):
    model.save(path)
    return path


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        yolonas.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        yolonas.load(tmp_path / "junk.pt")


class _Pickled:
    """Stands in for the extra objects Deci's files pickle (their processing params)."""


def test_untrusted_pickle_is_not_unpickled(tmp_path):
    state = build(yolo_nas_s(), 80).state_dict()
    torch.save({"net": state, "processing_params": _Pickled()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="SHA-256 matches no known file"):
        yolonas.load(tmp_path / "pickled.pth")


def test_spec_yaml_loads(tmp_path):
    yolo_nas_tiny().to_yaml(tmp_path / "arch.yaml")
    assert yolonas.load(tmp_path / "arch.yaml", num_classes=4).num_classes == 4


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/'srv'; stopped after the test."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_pretrained_download_verifies_and_caches(tmp_path, local_server, monkeypatch, caplog):
    root, url = local_server
    torch.manual_seed(1)
    model = build(yolo_nas_s(), 80)
    _sg_file(model, root / "yolo_nas_s_coco.pth", "ema_net", "")
    digest = hashlib.sha256((root / "yolo_nas_s_coco.pth").read_bytes()).hexdigest()
    entry = weights.PretrainedFile("yolo_nas_s_coco.pth", digest)
    monkeypatch.setitem(weights.PRETRAINED, ("yolo_nas_s", "coco"), entry)
    monkeypatch.setenv("YOLONAS_WEIGHTS_URL", url)
    monkeypatch.setenv("YOLONAS_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        loaded = yolonas.load("yolo_nas_s", pretrained="coco")
    assert "non-commercial" in caplog.text
    assert (tmp_path / "cache" / "yolo_nas_s_coco.pth").is_file()
    assert _same_outputs(model, loaded)
    (root / "yolo_nas_s_coco.pth").unlink()  # served no more: the cache answers
    assert yolonas.load("yolo_nas_s", pretrained="coco", num_classes=3).num_classes == 3


def test_download_with_wrong_hash_is_discarded(tmp_path, local_server, monkeypatch):
    root, url = local_server
    (root / "yolo_nas_s_coco.pth").write_bytes(b"tampered")
    monkeypatch.setenv("YOLONAS_WEIGHTS_URL", url)
    monkeypatch.setenv("YOLONAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="SHA-256"):
        yolonas.load("yolo_nas_s", pretrained="coco")
    assert not any((tmp_path / "cache").iterdir())


def test_download_failure_is_one_line(tmp_path, local_server, monkeypatch):
    _, url = local_server
    monkeypatch.setenv("YOLONAS_WEIGHTS_URL", url + "missing/")
    monkeypatch.setenv("YOLONAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="download failed") as err:
        yolonas.load("yolo_nas_m", pretrained="coco")
    assert "\n" not in str(err.value)


def test_other_class_count_fails_naming_the_classification_key():
    three = build(yolo_nas_tiny(), 3).state_dict()
    with pytest.raises(CheckpointError, match=r"'heads\.head1\.cls_pred\.weight' has shape \[3, 32, 1, 1\]"):
        weights.load_state_strict(build(yolo_nas_tiny(), 80), three, "three.pt")
