"""Architecture search: space, latency table and model, proxies, the NSGA-II driver and `yolonas search`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import onnx
import optuna
import pytest
import torch
from typer.testing import CliRunner

import yolonas
from yolonas.arch.spec import yolo_nas_l, yolo_nas_m, yolo_nas_s, yolo_nas_tiny
from yolonas.cli import app
from yolonas.errors import InputError
from yolonas.nas import (
    LatencyModel,
    LatencyTable,
    SearchConfig,
    SearchResult,
    SearchSpace,
    calibration_specs,
    contains,
    decode,
    encode,
    fit_correction,
    meco,
    prediction_errors,
    sample,
    search,
    seeds,
    spec_hash,
    spec_parts,
)
from yolonas.nas.latency import _export
from yolonas.nas.report import plot_front
from yolonas.nas.search import _front, kendall_taus
from yolonas.quant import ptq
from yolonas.quant.ptq import int8_for_latency

# A few choices around yolo_nas_tiny: big enough to search, small enough to measure in seconds at 64 px.
SMALL = SearchSpace(stem_widths=(16,), stage_widths=((32,), (64,), (96,), (128,)), stage_blocks=(1, 1),
                    hidden_ratios=("1/2",), concat=(False, True), neck_widths=((64,), (32,), (64,), (128,)),
                    neck_blocks=(1, 1), neck_hidden=(16, 32, 64), head_mults=(0.25,), imgsz=(64,))


@pytest.mark.parametrize("make", [yolo_nas_s, yolo_nas_m, yolo_nas_l, yolo_nas_tiny])
def test_published_specs_are_points_of_the_space(make):
    spec = make()
    params = encode(spec, SearchSpace())
    back = decode(params, spec.name)
    assert back.to_dict() == spec.to_dict()


def test_specs_outside_the_space_are_rejected_in_one_line():
    spec = yolo_nas_s()
    spec.backbone.stages[0].hidden_channels = 40  # no ratio of 96 rounds to 40
    assert not contains(SearchSpace(), spec)
    with pytest.raises(InputError, match="stage1.hidden") as e:
        encode(spec, SearchSpace())
    assert "\n" not in str(e.value)
    spec = yolo_nas_s()
    spec.neck.up1.block = "conv"  # block types are fixed in the space
    with pytest.raises(InputError, match="neck.up1.block"):
        encode(spec, SearchSpace())
    with pytest.raises(InputError, match="lacks parameter 'stage1.width'"):
        decode({})


def test_sampled_specs_build_run_and_round_trip():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    space = SearchSpace(imgsz=(32, 64))
    for _ in range(2):
        trial = study.ask()
        spec, imgsz = sample(trial, space)
        assert imgsz in (32, 64)
        assert decode(trial.params).to_dict() == spec.to_dict()  # the trial's choices are an encoding
        # Small widths round two hidden ratios to one width, so compare specs, not encodings.
        assert decode(encode(spec, space, imgsz)).to_dict() == spec.to_dict()
        model = yolonas.build(spec, num_classes=3).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, imgsz, imgsz))
        assert out.cls_logits.shape == (1, sum((imgsz // s) ** 2 for s in (8, 16, 32)), 3)
        study.tell(trial, [0.0, 1.0])


def test_latency_table_hits_and_misses_by_key(tmp_path):
    path = tmp_path / "lat.json"
    spec = yolo_nas_tiny()
    parts = spec_parts(spec, 64, 3)
    assert [p.name for p in parts] == ["stem", "stage1", "stage2", "stage3", "stage4", "spp",
                                       "neck1", "neck2", "neck3", "neck4", "heads"]
    first = LatencyModel(LatencyTable(path), warmup=1, runs=2)
    pred = first.predict(spec, 64, 3)
    assert first.table.misses == len(parts) and first.table.hits == 0 and path.is_file()
    # The total is the sum of the parts, each a positive time.
    assert pred["total"] == pytest.approx(sum(pred[p.name] for p in parts))
    assert all(pred[p.name] > 0 for p in parts)
    again = LatencyModel(LatencyTable(path), warmup=1, runs=2)  # read back from disk: all hits, same numbers
    assert again.predict(spec, 64, 3) == pred
    assert again.table.hits == len(parts) and again.table.misses == 0 and again.measured == 0
    # Another thread count or class count is another key: the head alone changes with the classes.
    other = LatencyModel(LatencyTable(path), threads=1, warmup=1, runs=2)
    other.predict(spec, 64, 3)
    assert other.table.misses == len(parts)
    classes = LatencyModel(LatencyTable(path), warmup=1, runs=2)
    classes.predict(spec, 64, 5)
    assert classes.table.misses == 1 and classes.table.hits == len(parts) - 1


def test_calibration_fits_the_sum_of_parts_to_whole_networks_and_is_cached(tmp_path):
    specs = calibration_specs(SMALL, seed=0)
    assert len(specs) == 5 and len({spec_hash(s) for s in specs}) == 5 and all(contains(SMALL, s) for s in specs)
    assert [spec_hash(s) for s in calibration_specs(SMALL, seed=0)] == [spec_hash(s) for s in specs]
    assert len(calibration_specs(SearchSpace.around(yolo_nas_s()), n_random=2)) == 4
    path = tmp_path / "lat.json"
    lat = LatencyModel(LatencyTable(path), warmup=1, runs=3)
    cal = lat.calibration(specs, 64, 3)
    assert cal["n"] == 5 and cal["a"] > 0 and len(cal["whole"]) == 5 and all(w > 0 for w in cal["whole"])
    # The fit is of the whole networks' times on the parts' sums.
    a, b = fit_correction(cal["parts_sum"], cal["whole"])
    assert (cal["a"], cal["b"]) == pytest.approx((a, b)) or cal["b"] == 0.0
    again = LatencyModel(LatencyTable(path), warmup=1, runs=3)  # from disk, nothing measured
    assert again.calibration(specs, 64, 3) == json.loads(json.dumps(cal)) and again.measured == 0
    assert LatencyModel(LatencyTable(path), threads=1).target not in " ".join(again.table.calibrations)
    with pytest.raises(InputError, match="at least 3 networks"):
        LatencyModel(LatencyTable(tmp_path / "other.json")).calibration(specs[:2], 64, 3)


def test_latency_model_rejects_bad_settings(tmp_path):
    with pytest.raises(InputError, match="unknown latency backend"):
        LatencyModel(LatencyTable(tmp_path / "t.json"), backend="tflite")
    with pytest.raises(InputError, match="threads"):
        LatencyModel(LatencyTable(tmp_path / "t.json"), threads=0)
    with pytest.raises(InputError, match="--backend onnxruntime or openvino"):
        LatencyModel(LatencyTable(tmp_path / "t.json"), backend="torch", precision="int8")
    with pytest.raises(InputError, match="fp16 latency is PyTorch on a GPU"):
        LatencyModel(LatencyTable(tmp_path / "t.json"), precision="fp16")
    with pytest.raises(InputError, match="unknown precision"):
        LatencyModel(LatencyTable(tmp_path / "t.json"), precision="fp8")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a latency table"):
        LatencyTable(tmp_path / "bad.json")
    # A table timed the old way (before deploy.timing) is refused, not mixed with new numbers.
    (tmp_path / "old.json").write_text('{"version": 1, "entries": {}, "calibrations": {}}')
    with pytest.raises(InputError, match="timed the old way"):
        LatencyTable(tmp_path / "old.json")
    with pytest.raises(InputError, match="multiple of 32"):
        spec_parts(yolo_nas_tiny(), 100, 3)


@pytest.mark.parametrize(("backend", "precision"), [("torch", "fp32"), ("openvino", "fp32"), ("openvino", "int8"),
                                                    ("onnxruntime", "int8")])
def test_each_latency_target_predicts_and_measures(tmp_path, monkeypatch, backend, precision):
    quantized = []  # int8 must time the quantized file, parts and whole alike
    monkeypatch.setattr(ptq, "int8_for_latency", lambda *a, **k: quantized.append(a[0]) or int8_for_latency(*a, **k))
    spec = yolo_nas_tiny()
    n_parts = len(spec_parts(spec, 64, 3))
    table = LatencyTable(tmp_path / "lat.json")
    lat = LatencyModel(table, backend, precision=precision, warmup=1, runs=2)
    pred = lat.predict(spec, 64, 3)
    assert lat.measured == n_parts and all(v > 0 for v in pred.values())
    assert f"{backend} " in lat.target and f" {precision} " in lat.target
    assert lat.measure([spec], 64, 3)["whole"][0] > 0
    assert len(quantized) == (n_parts + 1 if precision == "int8" else 0)
    # fp32 onnxruntime is another target: every part is a miss there.
    other = LatencyModel(table, warmup=1, runs=2)
    other.predict(spec, 64, 3)
    assert other.measured == n_parts


def test_int8_latency_parts_quantize_the_head_convs_not_the_decode(tmp_path):
    heads = spec_parts(yolo_nas_tiny(), 64, 3)[-1]
    inputs = [torch.randn(s) for s in heads.shapes]
    path = _export(heads.build(), inputs, tmp_path / "heads.onnx")
    out = int8_for_latency(path, tmp_path / "heads_int8.onnx", [x.numpy() for x in inputs], prefixes=("/heads/head",))
    nodes = onnx.load(str(out)).graph.node
    made_by = {o: n.op_type for n in nodes for o in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    int8 = {n.name for n in convs if made_by.get(n.input[0]) == "DequantizeLinear"}
    assert int8 and int8 == {n.name for n in convs if n.name.startswith("/heads/head")}
    assert not any(made_by.get(i) == "DequantizeLinear" for n in nodes if n.op_type == "Softmax" for i in n.input)


def test_correction_and_errors():
    predicted = [10.0, 20.0, 30.0, 40.0, 50.0]
    measured = [1.5 * p + 2 for p in predicted]
    a, b = fit_correction(predicted, measured)
    assert a == pytest.approx(1.5) and b == pytest.approx(2.0)
    err = prediction_errors(predicted, measured)
    assert err["raw_median"] == pytest.approx((1.5 * 30 + 2 - 30) / (1.5 * 30 + 2))
    assert err["corrected_loo_median"] == pytest.approx(0.0, abs=1e-9)


def test_meco_is_deterministic_and_separates_sizes():
    x = torch.rand(2, 3, 64, 64)
    tiny = meco(yolo_nas_tiny(), x, 3)
    assert tiny == meco(yolo_nas_tiny(), x, 3)
    deeper = yolo_nas_tiny()
    for stage in deeper.backbone.stages:
        stage.num_blocks = 3
    assert meco(deeper, x, 3) > tiny  # more layers with decorrelated channels


def test_front_keeps_feasible_undominated_trials_once_per_architecture(tmp_path):
    def trial(number, spec, score, ms):
        return SimpleNamespace(number=number, values=[score, ms],
                               user_attrs={"spec": spec.to_dict(), "imgsz": 64, "latency_ms": ms})

    deeper = yolo_nas_tiny()
    deeper.backbone.stages[0].num_blocks = 2
    trials = [trial(0, yolo_nas_tiny(), 1.0, 5.0), trial(1, deeper, 2.0, 8.0), trial(2, yolo_nas_tiny(), 1.0, 5.0),
              trial(3, deeper, 1.5, 9.0), trial(4, yolo_nas_s(), 3.0, 20.0)]
    # The same architecture twice counts once (its first trial); a dominated trial and one over the cap are out.
    assert [t.number for t in _front(trials, None)] == [0, 1, 4]
    assert [t.number for t in _front(trials, 10.0)] == [0, 1]
    assert _front(trials, 1.0) == []
    points = [{"latency_ms": t.values[1], "score": t.values[0], "seed": None} for t in trials]
    rows = [{"latency_ms": 5.0, "meco": 1.0, "measured_ms": 5.5}, {"latency_ms": 8.0, "meco": 2.0}]
    assert plot_front(points, rows, tmp_path / "front.png", "meco", 10.0).stat().st_size > 1000


def test_tiny_search_writes_front_and_resumes(coco128, tmp_path):
    out = tmp_path / "runs" / "search" / "t"
    cfg = SearchConfig(data=str(coco128 / "data.yaml"), out=out, imgsz=(64,), trials=3, population=2, runs=2,
                       measure_front=1, space=SMALL, progress=False, latency_table=tmp_path / "lat.json")
    result = search(cfg).to_dict()
    assert result["trials"] == 3 and result["trials_this_run"] == 3
    assert json.loads((out / "search.json").read_text()).keys() == result.keys()  # the JSON users read
    assert (out / "front.md").read_text().startswith("# Search front")
    assert (out / "front.png").stat().st_size > 1000
    front = result["front"]
    assert front and all(r["latency_ms"] > 0 for r in front)
    assert [r["latency_ms"] for r in front] == sorted(r["latency_ms"] for r in front)
    model = yolonas.load(front[0]["spec_file"])  # each member's YAML is a spec that loads and trains
    assert model.spec.to_dict()["backbone"] == json.loads(json.dumps(model.spec.to_dict()["backbone"]))
    assert "measured_ms" in front[0] and result["latency_check"]["table"]["n"] == 1
    cal = result["calibration"]["64"]  # the prediction is the calibrated sum of parts
    assert cal["n"] == 5 and front[0]["latency_ms"] == pytest.approx(cal["a"] * front[0]["latency_sum_ms"] + cal["b"])
    assert "calibrated" in (out / "front.md").read_text()
    # Resume: the same folder continues the stored study up to the new total.
    cfg.trials, cfg.measure_front = 4, 0
    again = search(cfg).to_dict()
    assert again["trials"] == 4 and again["trials_this_run"] == 1 and again["calibration"] == result["calibration"]
    assert sorted(p.name for p in (out / "specs").glob("*.yaml")) == sorted(
        f"{r['rank']:02d}_{r['name']}.yaml" for r in again["front"])  # only the current front's specs
    assert again["latency_table"]["hits"] > 0
    # A cap relative to a reference network: x1.0 of the first member is exactly its calibrated prediction.
    cfg.latency_cap_ratio, cfg.reference = 1.0, model.spec
    relative = search(cfg).to_dict()
    assert relative["latency_cap_ms"] == pytest.approx(front[0]["latency_ms"])
    assert relative["front"] and all(r["latency_ms"] <= relative["latency_cap_ms"] + 1e-9 for r in relative["front"])
    cfg.latency_cap_ratio = cfg.reference = None
    # A cap no trial meets: an empty front that says why, not a silent one.
    cfg.latency_cap, cfg.out = 1e-6, tmp_path / "runs" / "search" / "capped"
    capped = search(cfg).to_dict()
    assert capped["front"] == [] and "no trial met --latency-cap" in capped["note"]
    assert "no trial met --latency-cap" in (cfg.out / "front.md").read_text()


def test_search_cli_bad_inputs_are_one_line(coco128, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args, message in ((["--imgsz", "100"], "multiple of 32"), (["--trials", "0"], "--trials"),
                          (["--latency-cap", "-3"], "--latency-cap"),
                          (["--latency-cap", "30", "--latency-cap-ratio", "0.8"], "--latency-cap-ratio"),
                          (["--backend", "tflite"], "tflite"),
                          (["--imgsz", "big"], "--imgsz"), (["--train-top", "2", "--train-imgsz", "100"],
                                                              "--train-imgsz")):
        result = runner.invoke(app, ["search", "--data", str(coco128 / "data.yaml"), *args])
        assert result.exit_code != 0
        assert isinstance(result.exception, InputError) and message in str(result.exception)
    result = runner.invoke(app, ["search", "--data", str(coco128 / "data.yaml"), "--around", "nosuch_model"])
    assert result.exit_code != 0 and "nosuch_model" in str(result.exception)
    result = runner.invoke(app, ["search", "--data", str(coco128 / "data.yaml"), "--around", "yolo_nas_s",
                                 "--around-steps", "0"])
    assert isinstance(result.exception, InputError) and "at least 1 step" in str(result.exception)
    result = runner.invoke(app, ["search", "--data", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and "missing.yaml" in str(result.exception)


def test_search_cli_proxy_defaults_to_gflops_around_a_model(coco128, tmp_path, monkeypatch):
    import yolonas.nas  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    seen = []

    def fake_search(cfg):
        seen.append(cfg.proxy)
        return SearchResult(out=str(cfg.out), trials=0, trials_this_run=0, search_s=0.0, space_size=1, target="t",
                            proxy=cfg.proxy, latency_cap_ms=None, latency_cap_ratio=None, latency_reference=None,
                            calibration={}, latency_table={}, load_average=[0.0, 0.0, 0.0])

    monkeypatch.setattr(yolonas.nas, "search", fake_search)
    runner = CliRunner()
    data = str(coco128 / "data.yaml")
    for args in (["--around", "yolo_nas_s"], [], ["--around", "yolo_nas_s", "--proxy", "meco"]):
        result = runner.invoke(app, ["search", "--data", data, "--json", "-", *args])
        assert result.exit_code == 0, result.output
        assert {"out", "trials", "trials_this_run", "latency_cap_ms", "front"} <= json.loads(result.stdout).keys()
    assert seen == ["gflops", "meco", "meco"]


def test_kendall_taus_orient_losses_and_skip_ties():
    rows = [{"meco": m, "params": p, "gflops": 1.0, "latency_ms": 5.0 - m, "ap": a, "loss": loss}
            for m, p, a, loss in ((1.0, 3.0, 0.1, 3.0), (2.0, 2.0, 0.2, 2.5), (3.0, 1.0, 0.3, 2.0))]
    by_ap = kendall_taus(rows, "ap")
    assert by_ap["meco"]["tau"] == pytest.approx(1.0) and by_ap["params"]["tau"] == pytest.approx(-1.0)
    assert by_ap["latency_ms"]["tau"] == pytest.approx(-1.0) and by_ap["gflops"] is None  # an estimate that ties
    assert kendall_taus(rows, "loss", lower_is_better=True)["meco"]["tau"] == pytest.approx(1.0)
    assert all(v is None for v in kendall_taus(rows[:2], "ap").values())  # two members rank nothing
    assert all(v is None for v in kendall_taus([{**r, "ap": 0.0} for r in rows], "ap").values())


def test_short_training_records_ap_and_training_loss(coco128, tmp_path):
    out = tmp_path / "runs" / "search" / "short"
    cfg = SearchConfig(data=str(coco128 / "data.yaml"), out=out, imgsz=(64,), trials=2, population=2, runs=2,
                       measure_front=0, space=SMALL, progress=False, latency_table=tmp_path / "lat.json",
                       train_top=1, train_epochs=1, train_imgsz=64, train_images=4, proxy="params")
    result = search(cfg).to_dict()
    trained = [r for r in result["front"] if "short_train_ap" in r]
    assert len(trained) == 1 and 0 < trained[0]["short_train_loss"] < 100
    assert result["short_training"]["trained"] == [trained[0]["name"]]
    assert set(result["short_training"]["kendall_tau_loss"]) == {"meco", "params", "gflops", "latency_ms"}
    assert trained[0]["meco"] is not None  # scored for the ranking even when the search used another proxy
    assert "short-train loss" in (out / "front.md").read_text()


def test_neighbourhood_of_a_spec_is_a_small_space_around_it():
    s = yolo_nas_s()
    space = SearchSpace.around(s)
    assert contains(space, s) and list(seeds(space)) == ["yolo_nas_s"]
    assert space.size() < SearchSpace().size() / 1e6
    c = space.choices()
    assert c["stage1.blocks"] == (1, 2, 3) and c["stage3.width"] == (256, 384)  # clipped at the grid's end
    assert c["stage1.hidden"] == ("1/4", "1/3", "1/2") and c["stage1.concat"] == (False,)
    assert c["head.mult"] == (0.375, 0.5, 0.75) and c["up2.hidden"] == (32, 48, 64)
    assert SearchSpace.around(s, steps=2).choices()["stage1.width"] == (48, 64, 96, 128)
    for trial_params in ({k: v[0] for k, v in c.items()}, {k: v[-1] for k, v in c.items()}):
        assert contains(space, decode(trial_params))  # its corners are specs of the space
    with pytest.raises(InputError, match="at least 1 step"):
        SearchSpace.around(s, steps=0)
    odd = yolo_nas_s()
    odd.backbone.stages[0].out_channels = 100
    with pytest.raises(InputError, match="not in the search space"):
        SearchSpace.around(odd)
