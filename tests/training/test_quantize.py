"""training.quantize on a real (small) NPR checkpoint: the int8 file lands beside it, says where
it came from, and carries agreement figures that were actually measured."""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_model, read_meta
from models.quantized import OnnxDetector, OnnxModel, QuantizedModelError, quantized_path
from models.sngan import Generator, GeneratorConfig
from tests.app.conftest import INT8_SMALL_SETS
from training.detector_data import checkpoint_sets, load_views
from training.logit_correction import append_affine, fit_correction, implausible
from training.quantize import (
    export_onnx,
    main,
    model_inputs,
    operating_views,
    parse_args,
    view_logits,
)


def test_the_int8_file_sits_beside_its_checkpoint_and_names_its_source(int8_npr: Path) -> None:
    path = quantized_path(int8_npr)
    assert path == int8_npr.parent / "detector.int8.onnx"
    assert path.read_bytes()[:1] != b"\x80"  # protobuf, not a pickle
    meta = OnnxDetector(path).meta
    source = read_meta(int8_npr)
    assert meta.source_sha256 == source.weights_sha256
    assert meta.source_file == int8_npr.name and meta.kind == "npr"
    assert meta.toolchain["onnxruntime"] == importlib_metadata.version("onnxruntime")
    assert meta.toolchain["torch"] == torch.__version__
    report = json.loads((int8_npr.parent / "quantize.json").read_text())
    assert report["result"]["source_sha256"] == source.weights_sha256


def test_calibration_uses_validation_images_of_both_classes_never_test(
    int8_npr: Path, ham_dir: Path
) -> None:
    meta = OnnxDetector(quantized_path(int8_npr)).meta
    source = read_meta(int8_npr)
    sets = checkpoint_sets(source, ham_dir, None, {"val": 8, "test": 24})
    calibration = meta.calibration
    assert calibration["split"] == "val"
    assert (calibration["real"], calibration["synthetic"]) == (
        len(sets["val"].real),
        len(sets["val"].synthetic),
    )
    assert calibration["real"] > 0 and calibration["synthetic"] > 0
    assert calibration["views"] == 2 * (calibration["real"] + calibration["synthetic"])
    assert not set(sets["val"].real) & set(sets["test"].real)
    assert not set(sets["val"].synthetic) & set(sets["test"].synthetic)


def test_agreement_figures_are_measured_on_the_held_out_test_set(
    int8_npr: Path, ham_dir: Path
) -> None:
    """The recorded figures are recounted here from both models on the same test images."""
    figures = OnnxDetector(quantized_path(int8_npr)).meta.agreement
    sets = checkpoint_sets(read_meta(int8_npr), ham_dir, None, {"test": 24})
    assert figures["real"] == len(sets["test"].real) > 0
    assert figures["synthetic"] == len(sets["test"].synthetic) > 0
    assert figures["images"] == figures["real"] + figures["synthetic"]
    n = figures["images"]
    assert figures["verdict_agreement"] == (n - figures["verdicts_differing"]) / n
    assert figures["roc_auc_drop"] == figures["roc_auc_fp32"] - figures["roc_auc_int8"]
    assert 0 < figures["max_abs_probability_diff"] < 0.2  # int8 moved it, but not far


def test_int8_logits_follow_the_fp32_model_on_test_images(int8_npr: Path, ham_dir: Path) -> None:
    """Logits spread with std 2 (tests/app/conftest.py): int8 must track them closely."""
    model, meta = load_model(int8_npr)
    int8 = OnnxDetector(quantized_path(int8_npr))
    test = checkpoint_sets(meta, ham_dir, None, {"test": 12})["test"]
    _, views = load_views([*test.real, *test.synthetic], meta.preprocess_config, quiet=True)
    x = model_inputs(views, meta.preprocess_config)
    with torch.inference_mode():
        want, got = model(x), int8(x)
    assert got.shape == want.shape == (len(x),)
    assert torch.corrcoef(torch.stack([want, got]))[0, 1] > 0.99


def test_the_generator_exports_to_onnx_and_draws_the_same_images(tmp_path: Path) -> None:
    """bench.model_speed times the generator on ONNX Runtime fp32: the exported file must draw
    what torch draws, for any batch size (the batch dimension is dynamic)."""
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(image_size=32, channels=16)).eval()
    path = tmp_path / "generator.onnx"
    export_onnx(generator, torch.zeros(2, generator.config.z_dim), path)
    onnx_generator = OnnxModel(path)
    assert onnx_generator.input_name == "z"
    z = torch.randn(5, generator.config.z_dim)
    with torch.inference_mode():
        expected = generator(z)
    got = onnx_generator(z)
    assert got.shape == (5, 3, 32, 32)
    assert torch.allclose(got, expected, atol=1e-4)
    with pytest.raises(QuantizedModelError, match="input 'z'"):
        OnnxDetector(path, require_meta=False)  # a detector file takes images, not noise


def test_sensitivity_ranks_layers_on_validation_and_keeping_them_fp32_moves_towards_fp32(
    int8_npr: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """bench.int8_sensitivity: every weight layer is measured alone; keeping every layer fp32
    (every node ONNX Runtime would quantize) gives fp32's own verdicts, and the report names
    what it kept."""
    from bench import int8_sensitivity

    out = tmp_path / "sensitivity.json"
    args = ["--checkpoint", str(int8_npr), "--data", str(ham_dir), "--val-limit", "12"]
    args += ["--calibration-images", "8", "--test-limit", "12", "--out", str(out)]
    layers = int8_sensitivity.layers_of(int8_npr, "all")
    result = int8_sensitivity.main(
        int8_sensitivity.parse_args([*args, "--ops", "all", "--keep", "0", str(len(layers))])
    )
    assert json.loads(out.read_text())["ranked"] == result["ranked"]
    assert sorted(result["alone"]) == sorted(layers) == sorted(result["ranked"])
    dps = [result["alone"][n]["mean_abs_dp"] for n in result["ranked"]]
    assert dps == sorted(dps, reverse=True) and dps[0] > 0
    assert set(int8_sensitivity.layers_of(int8_npr)) < set(layers)  # weights are a subset
    none_kept, all_kept = result["kept"]
    assert none_kept["kept_fp32"] == [] and all_kept["kept_fp32"] == result["ranked"]
    for split in ("val", "test"):
        assert all_kept[split]["agreement"] == 1.0
        assert all_kept[split]["mean_abs_dp"] < 1e-4 < none_kept[split]["mean_abs_dp"]


def test_keep_fp32_keeps_the_nodes_ranked_worst_on_validation(
    int8_npr: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """--keep-fp32 N: the N nodes with the largest int8 error alone (on validation images) stay
    fp32 in the written file, and its metadata says which, how they were ranked and what the
    validation agreement was; the file still serves and is measured on test like any other."""
    import shutil

    import onnx

    checkpoint = tmp_path / "npr" / "detector.safetensors"
    checkpoint.parent.mkdir()
    shutil.copy(int8_npr, checkpoint)
    args = ["--checkpoint", str(checkpoint), "--data", str(ham_dir), "--quiet"]
    args += ["--calibration-images", "8", "--test-limit", "12", "--sensitivity-images", "8"]
    (meta,) = main(parse_args([*args, "--keep-fp32", "2"]))
    kept = meta.toolchain["kept_fp32"]
    selection = meta.toolchain["kept_fp32_selection"]
    worst = list(selection["most_sensitive"])
    dps = list(selection["most_sensitive"].values())
    assert len(kept) == 2 and kept == worst[:2] and dps == sorted(dps, reverse=True)
    assert list(selection["tried"]) == ["2"] and selection["validation_images"] > 0
    served = OnnxDetector(quantized_path(checkpoint))
    assert served.meta.toolchain["kept_fp32"] == kept
    graph = onnx.load(str(quantized_path(checkpoint))).graph
    weights = {t.name for t in graph.initializer}
    int8_weights = {  # dequantized weights: what a quantized node multiplies by
        out
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in weights
        for out in n.output
    }
    assert int8_weights  # the rest of the model is int8
    for node in (n for n in graph.node if n.name in kept):
        assert not set(node.input) & int8_weights, node.name  # computes with fp32 weights
    with pytest.raises(SystemExit):
        parse_args([*args, "--keep-fp32", "some"])


def test_fit_correction_recovers_an_affine_map() -> None:
    x = np.random.default_rng(0).normal(size=(50, 2))
    assert fit_correction(x, 1.25 * x - 0.5) == pytest.approx((1.25, -0.5))
    assert fit_correction(x, x) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert implausible(1.25) is None
    assert "outside" in implausible(-0.3) and "outside" in implausible(4.0)


def test_append_affine_keeps_every_reader_of_the_old_output(tmp_path: Path) -> None:
    """A graph whose output is also read by another node stays valid (onnx.checker) and gives
    scale * output + shift; a graph whose output no node makes is refused."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], "relu"),
        helper.make_node("Neg", ["y"], ["unused"], "reader"),  # another reader of the output
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    append_affine(path, 2.0, -1.0)
    got = OnnxModel(path)(torch.tensor([[-3.0], [0.5], [2.0]]))
    assert torch.allclose(got, torch.tensor([[-1.0], [0.0], [3.0]]))
    through = helper.make_graph([], "g", [x], [x])
    onnx.save(helper.make_model(through, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="no node produces"):
        append_affine(path, 2.0, -1.0)


def test_the_output_correction_is_fitted_on_validation_and_travels_in_the_file(
    int8_npr: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """The served file's logit is scale * (ONNX Runtime's int8 logit) + shift, both named in its
    metadata, fitted on the validation views; on held-out test views it brings the int8 logits
    closer to fp32's."""
    import shutil

    raw_checkpoint = tmp_path / "raw" / "detector.safetensors"
    raw_checkpoint.parent.mkdir()
    shutil.copy(int8_npr, raw_checkpoint)
    args = ["--checkpoint", str(raw_checkpoint), "--data", str(ham_dir), "--quiet"]
    main(parse_args([*args, *INT8_SMALL_SETS, "--no-correct-logits"]))
    raw = OnnxDetector(quantized_path(raw_checkpoint))
    corrected = OnnxDetector(quantized_path(int8_npr))
    assert raw.meta.toolchain["output_correction"] is None
    correction = corrected.meta.toolchain["output_correction"]
    assert correction["applied"] is True
    scale, shift = correction["scale"], correction["shift"]

    model, meta = load_model(int8_npr)
    sets = checkpoint_sets(meta, ham_dir, None, {"val": 16, "test": 24})
    views = operating_views(meta, sets["val"])
    assert correction["validation_views"] == views.shape[0] * views.shape[1]
    views = operating_views(meta, sets["test"])
    want = view_logits(model, meta, views)
    got_raw, got = view_logits(raw, meta, views), view_logits(corrected, meta, views)
    np.testing.assert_allclose(got, scale * got_raw + shift, rtol=1e-5, atol=1e-5)
    assert np.mean((got - want) ** 2) < np.mean((got_raw - want) ** 2)


def test_the_recipe_bench_measures_each_recipe_on_a_copy(
    int8_npr: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """bench.int8_recipes: one training.quantize run per recipe, never touching the int8 file
    that sits beside the real checkpoint."""
    from bench import int8_recipes

    served = quantized_path(int8_npr).read_bytes()
    out = tmp_path / "recipes.json"
    args = ["--checkpoint", str(int8_npr), "--data", str(ham_dir), "--out", str(out)]
    args += ["--recipes", "minmax:8:no", "percentile:8:yes"]
    args += ["--sensitivity-images", "16", "--test-limit", "24"]
    report = int8_recipes.main(int8_recipes.parse_args(args))
    assert json.loads(out.read_text())["recipes"] == report["recipes"]
    plain, corrected = report["recipes"]["minmax:8:no"], report["recipes"]["percentile:8:yes"]
    assert plain["output_correction"] is None
    assert corrected["output_correction"]["validation_views"] > 0
    for r in (plain, corrected):
        assert r["images"] > 0 and 0 <= r["verdict_agreement"] <= 1
    assert quantized_path(int8_npr).read_bytes() == served
    with pytest.raises(SystemExit):
        int8_recipes.parse_args([*args[:4], "--recipes", "minmax:many:no"])


def test_calibration_views_are_capped_half_per_class(int8_npr: Path, ham_dir: Path) -> None:
    """Percentile calibration holds every activation of every view in memory: the cap keeps a
    seeded sample, half real and half synthetic."""
    from training.quantize import calibration_inputs

    meta = read_meta(int8_npr)
    val = checkpoint_sets(meta, ham_dir, None, {"val": 8, "test": 1})["val"]
    every = calibration_inputs(meta, val)
    assert len(every) == 2 * (len(val.real) + len(val.synthetic)) > 8
    capped = calibration_inputs(meta, val, max_views=8, seed=3)
    assert len(capped) == 8
    real_views = every[: 2 * len(val.real)]
    assert all((real_views == x).all(dim=(1, 2, 3)).any() for x in capped[:4])  # real half
    assert not any((real_views == x).all(dim=(1, 2, 3)).any() for x in capped[4:])
    assert torch.equal(capped, calibration_inputs(meta, val, max_views=8, seed=3))
    with pytest.raises(SystemExit):  # one view cannot be half per class
        parse_args(["--checkpoint", str(int8_npr), "--calibration-views", "1"])


def test_fp32_head_keeps_the_logit_off_the_uint8_grid(
    int8_npr: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """--fp32-head: the layer that makes the logit computes with fp32 weights and its output is
    never quantized; the metadata names those nodes; the rest of the model stays int8."""
    import shutil

    import onnx

    checkpoint = tmp_path / "head" / "detector.safetensors"
    checkpoint.parent.mkdir()
    shutil.copy(int8_npr, checkpoint)
    args = ["--checkpoint", str(checkpoint), "--data", str(ham_dir), "--quiet"]
    (meta,) = main(parse_args([*args, *INT8_SMALL_SETS, "--fp32-head"]))
    head = meta.toolchain["fp32_head"]
    graph = onnx.load(str(quantized_path(checkpoint))).graph
    by_name = {n.name: n for n in graph.node}
    assert head and by_name[head[0]].op_type == "Gemm"
    producers = {out: n.op_type for n in graph.node for out in n.output}
    head_tensors = {t for name in head for t in by_name[name].output}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in head_tensors for n in graph.node)
    weight = by_name[head[0]].input[1]
    assert producers.get(weight) != "DequantizeLinear"  # fp32 weights, not dequantized int8
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 5  # the body is int8
    from bench.int8_recipes import parse_recipe

    assert parse_recipe("percentile:8:yes:fp32head")[-1] == "--fp32-head"
    with pytest.raises(ValueError):
        parse_recipe("percentile:8:yes:head")
