"""Backbones: output keys/strides/shapes, freezing, FrozenBN, imagenet weight mapping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_contract import check_layer_contract
from tf_rcnn.models.backbones import FrozenBatchNormalization, TinyBackbone, build_backbone
from tf_rcnn.models.backbones.resnet import (
    Bottleneck,
    ResNet,
    ResNetStage,
    copy_keras_resnet_weights,
    make_res5_head,
)
from tf_rcnn.models.backbones.vgg import VGG16, copy_keras_vgg16_weights
from tf_rcnn.models.roi_heads.box_head import ResNetC4BoxHead


def _check_outputs(model, outputs, image_hw):
    assert set(outputs) == set(model.output_strides) == set(model.output_channels)
    for name, x in outputs.items():
        stride = model.output_strides[name]
        # Inputs are padded to a multiple of the coarsest stride by the data pipeline; for other
        # sizes "same" padding gives ceil(H / stride).
        assert tuple(x.shape[1:]) == (-(-image_hw[0] // stride), -(-image_hw[1] // stride),
                                      model.output_channels[name]), name


# ---------------------------------------------------------------- FrozenBatchNormalization


def test_frozen_bn_contract_and_math():
    layer = FrozenBatchNormalization(epsilon=1e-3)
    x = tf.random.normal((2, 3, 3, 4))
    check_layer_contract(layer, x, call_kwargs={"training": True})
    gamma, beta = np.array([1, 2, 3, 4.0]), np.array([0, 1, 0, -1.0])
    mean, var = np.array([0, 0.5, 1, 2.0]), np.array([1, 4, 0.25, 1.0])
    layer.set_weights([gamma, beta, mean, var])
    expected = gamma * (x.numpy() - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4


def test_frozen_bn_unchanged_by_train_step():
    inp = keras.Input((4, 4, 3))
    y = FrozenBatchNormalization()(keras.layers.Conv2D(3, 1)(inp))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(y))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    bn = model.layers[2]
    bn.set_weights([np.full(3, 2.0), np.full(3, 0.5), np.full(3, 0.1), np.full(3, 3.0)])
    before = [w.copy() for w in bn.get_weights()]
    model.fit(np.random.normal(size=(8, 4, 4, 3)), np.ones((8, 3)), epochs=1, verbose=0)
    for a, b in zip(before, bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- TinyBackbone


def test_tiny_backbone_shapes_and_dynamic_size():
    model = build_backbone("tiny")
    assert isinstance(model, TinyBackbone)
    _check_outputs(model, model(tf.zeros((2, 64, 64, 3))), (64, 64))
    fn = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    _check_outputs(model, fn(tf.zeros((1, 72, 88, 3))), (72, 88))
    assert model.output_strides == {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
    assert model.output_channels == {"C2": 16, "C3": 32, "C4": 64, "C5": 128}


def test_tiny_backbone_serialises():
    model = TinyBackbone(widths=(8, 8, 16, 16), name="tiny_x")
    x = tf.random.normal((1, 32, 32, 3))
    out = model(x)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    restored(x)
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(x)["C5"].numpy(), out["C5"].numpy(), atol=1e-5)
    assert restored.widths == (8, 8, 16, 16)
    with pytest.raises(ValueError, match="widths"):
        TinyBackbone(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("resnet18")


# ---------------------------------------------------------------- ResNet


@pytest.fixture(scope="module")
def resnet50():
    """One ResNet-50 (freeze_at=2, frozen BN) shared by the shape/freeze/mapping tests."""
    return build_backbone("resnet50")


def _kernel_names(variables):
    return {v.path.split("/")[-2] for v in variables if v.path.endswith("kernel")}


def test_resnet50_outputs_and_dynamic_size(resnet50):
    assert resnet50.output_strides == {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
    assert resnet50.output_channels == {"C2": 256, "C3": 512, "C4": 1024, "C5": 2048}
    _check_outputs(resnet50, resnet50(tf.zeros((1, 64, 64, 3))), (64, 64))
    fn = tf.function(resnet50, input_signature=[tf.TensorSpec((None, None, None, 3))])
    _check_outputs(resnet50, fn(tf.zeros((1, 72, 88, 3))), (72, 88))


def test_resnet50_freeze_at_2(resnet50):
    trainable = _kernel_names(resnet50.trainable_weights)
    frozen = _kernel_names(resnet50.non_trainable_weights)
    assert "conv1_conv" in frozen and "conv2_block3_3_conv" in frozen
    assert "conv3_block1_0_conv" in trainable and "conv5_block3_3_conv" in trainable
    assert not any(name.startswith(("conv1", "conv2")) for name in trainable)
    # Frozen BN: no norm parameter is trainable anywhere.
    assert all("bn" not in v.path for v in resnet50.trainable_weights)
    # 53 convs; 36 outside the stem and res2 (4 + 3 + 3 + ... blocks of conv3..conv5).
    assert len(resnet50.trainable_weights) == 53 - 1 - 10


@pytest.mark.parametrize("freeze_at,frozen_prefixes", [(0, ()), (1, ("conv1",)),
                                                         (3, ("conv1", "conv2", "conv3"))])
def test_resnet_freeze_at_levels(freeze_at, frozen_prefixes):
    model = ResNet(50, freeze_at=freeze_at, norm="bn", stages=("C2", "C3"))
    trainable = _kernel_names(model.trainable_weights)
    frozen = _kernel_names(model.non_trainable_weights)
    for name in ("conv1_conv", "conv2_block1_1_conv", "conv3_block1_1_conv"):
        assert (name in frozen) == name.startswith(frozen_prefixes), name
        assert (name in trainable) != (name in frozen)
    # With norm="bn" the BN of a trainable stage trains; a frozen stage's BN does not.
    bn_trainable = {v.path.split("/")[-2] for v in model.trainable_weights if "gamma" in v.path}
    assert ("conv3_block1_1_bn" in bn_trainable) == (freeze_at < 3)
    assert ("conv1_bn" in bn_trainable) == (freeze_at < 1)
    # A training-mode call updates BN statistics only in trainable stages.
    before = {n: model.get_layer(n.split("_block")[0]).blocks[0].norm_a.moving_mean.numpy()
              for n in ("conv2_block1_1_bn", "conv3_block1_1_bn")}
    model(tf.random.normal((2, 32, 32, 3)), training=True)
    for name, old in before.items():
        stage = name.split("_block")[0]
        new = model.get_layer(stage).blocks[0].norm_a.moving_mean.numpy()
        assert np.array_equal(old, new) == name.startswith(frozen_prefixes), name


def test_resnet_sync_bn_builds():
    model = ResNet(50, norm="sync_bn", stages=("C2",))
    bn = model.res_stages[0].blocks[0].norm_a
    assert isinstance(bn, keras.layers.BatchNormalization) and bn.synchronized
    assert model(tf.zeros((1, 32, 32, 3)), training=True)["C2"].shape == (1, 8, 8, 256)


def test_resnet_stride_in_1x1():
    caffe = ResNet(50, stages=("C2", "C3"), stride_in_1x1=True)
    torch = ResNet(50, stages=("C2", "C3"), stride_in_1x1=False)
    block = lambda m: m.res_stages[1].blocks[0]  # conv3_block1, the first strided block
    assert block(caffe).conv_a.strides == (2, 2) and block(caffe).conv_b.strides == (1, 1)
    assert block(torch).conv_a.strides == (1, 1) and block(torch).conv_b.strides == (2, 2)
    for model in (caffe, torch):
        _check_outputs(model, model(tf.zeros((1, 40, 56, 3))), (40, 56))
    with pytest.raises(ValueError, match="stride_in_1x1=True"):
        ResNet(50, stride_in_1x1=False, weights="imagenet")


def test_resnet_dilated_c5():
    model = ResNet(50, freeze_at=5, dilate_c5=True, stages=("C4", "C5"))
    assert model.output_strides == {"C4": 16, "C5": 16}
    out = model(tf.zeros((1, 64, 64, 3)))
    assert out["C5"].shape == (1, 4, 4, 2048) and out["C4"].shape == (1, 4, 4, 1024)
    conv5 = model.res_stages[3].blocks[0]
    assert conv5.conv_b.dilation_rate == (2, 2) and conv5.stride == 1
    assert model.trainable_weights == []  # freeze_at=5 freezes everything


def test_resnet_c4_trunk_and_config_round_trip(tmp_path):
    model = ResNet(50, stages=("C2", "C3", "C4", "C5"), include_c5=False)
    assert list(model.output_strides) == ["C2", "C3", "C4"]
    assert len(model.res_stages) == 3
    small = ResNet(50, stages=("C2",), name="r50_c2")
    config = small.get_config()
    assert config["weights"] is None
    rebuilt = ResNet.from_config(config)
    assert rebuilt.get_config() == config
    # A weights path loads into an identically configured model.
    for w in small.weights:
        w.assign(tf.random.normal(w.shape))
    path = str(tmp_path / "r50_c2.weights.h5")
    small.save_weights(path)
    loaded = ResNet(50, stages=("C2",), weights=path)
    x = tf.random.normal((1, 32, 32, 3))
    np.testing.assert_allclose(loaded(x)["C2"].numpy(), small(x)["C2"].numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"weights \(model.backbone.weights\) must be"):
        ResNet(50, weights="resnet.ckpt")
    with pytest.raises(ValueError, match="depth"):
        ResNet(34)
    with pytest.raises(ValueError, match="freeze_at"):
        ResNet(50, freeze_at=6)
    with pytest.raises(ValueError, match="norm"):
        ResNet(50, norm="gn")


def _randomise_keras_resnet(source):
    """Random biases and BN statistics, so the copy and the bias folding are really tested."""
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])


def test_resnet50_imagenet_mapping_reproduces_keras(resnet50):
    source = keras.applications.ResNet50(include_top=False, weights=None,
                                         input_shape=(64, 64, 3))
    _randomise_keras_resnet(source)
    assert copy_keras_resnet_weights(resnet50, source) == 53  # 1 stem + 16 blocks * 3 + 4
    taps = {"C2": "conv2_block3_out", "C3": "conv3_block4_out", "C4": "conv4_block6_out",
            "C5": "conv5_block3_out"}
    reference = keras.Model(source.input, {k: source.get_layer(v).output
                                           for k, v in taps.items()})
    x = tf.random.normal((2, 64, 64, 3))
    expected = reference(x[..., ::-1])  # keras takes BGR; the copied stem takes RGB
    got = resnet50(x)
    for name in taps:
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(),
                                   atol=1e-4 * scale, rtol=1e-4, err_msg=name)

    # res5 built on its own: copying conv5_* and running it on C4 reproduces C5 (the C4 RoI
    # head sees the same weights as the trunk's res5).
    res5 = make_res5_head()
    assert isinstance(res5, ResNetStage)
    copy_keras_resnet_weights(res5, source)
    np.testing.assert_allclose(res5(got["C4"]).numpy(), got["C5"].numpy(),
                               atol=1e-4 * float(np.abs(got["C5"]).max()))


def test_res5_head_and_c4_box_head():
    res5 = make_res5_head()
    assert res5(tf.zeros((2, 14, 14, 1024))).shape == (2, 7, 7, 2048)
    head = ResNetC4BoxHead(res5)
    x = tf.random.normal((1, 2, 14, 14, 1024))
    out = head(x)
    assert out.shape == (1, 2, 2048)
    expected = tf.reduce_mean(res5(tf.reshape(x, (2, 14, 14, 1024))), axis=[1, 2])
    np.testing.assert_allclose(out[0].numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    # R = 0 (TF's CPU conv returns its input for an empty batch; the head guards against it).
    assert head(tf.zeros((2, 0, 14, 14, 1024))).shape == (2, 0, 2048)


def test_c4_box_head_contract_small():
    head = ResNetC4BoxHead(ResNetStage(1, 4, stride=2, norm="frozen_bn", name="conv5"))
    out = check_layer_contract(head, tf.random.normal((2, 3, 6, 6, 12)))
    assert out.shape == (2, 3, 16)
    assert head(tf.zeros((2, 0, 6, 6, 12))).shape == (2, 0, 16)
    with pytest.raises(ValueError, match="res5"):
        ResNetC4BoxHead(res5={"class_name": "ResNetStage"})


def test_resnet_saves_and_loads_as_keras_file(tmp_path):
    model = ResNet(50, freeze_at=1, stages=("C2",), name="r50_small")
    for w in model.weights:
        w.assign(tf.random.normal(w.shape))
    x = tf.random.normal((1, 32, 32, 3))
    path = str(tmp_path / "r50_small.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ResNet) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(x)["C2"].numpy(), model(x)["C2"].numpy(), rtol=1e-5)


def test_resnet_parameter_counts():
    # keras.applications ResNet50/101 (include_top=False) have 23,587,712 / 42,658,176
    # parameters; ours equal them minus the conv biases (folded into the norms' means):
    # stem 64, per block F + F + 4F (+ 4F for the projection shortcut), F = 64..512.
    def biases(blocks):
        total = 64
        for n, f in zip(blocks, (64, 128, 256, 512), strict=True):
            total += n * 6 * f + 4 * f
        return total

    assert ResNet(50).count_params() == 23_587_712 - biases((3, 4, 6, 3))
    assert ResNet(101).count_params() == 42_658_176 - biases((3, 4, 23, 3))


# ---------------------------------------------------------------- VGG16


def test_vgg16_outputs_freeze_and_imagenet_mapping():
    model = build_backbone("vgg16")
    assert isinstance(model, VGG16)
    assert model.output_strides == {"C4": 16} and model.output_channels == {"C4": 512}
    _check_outputs(model, model(tf.zeros((1, 64, 64, 3))), (64, 64))
    fn = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    _check_outputs(model, fn(tf.zeros((1, 72, 88, 3))), (72, 88))
    # freeze_at=2: conv1_x and conv2_x frozen, conv3_1 onwards trainable (Fast R-CNN Sec. 4.5).
    trainable = _kernel_names(model.trainable_weights)
    assert trainable == {f"block{b}_conv{i}" for b, n in ((3, 3), (4, 3), (5, 3))
                         for i in range(1, n + 1)}
    assert _kernel_names(VGG16(freeze_at=0).trainable_weights) >= {"block1_conv1"}

    # Imagenet path: copy a randomly initialised keras VGG16 (random biases too) and compare
    # conv5_3 with keras' block5_conv3 output on the same input.
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
    assert copy_keras_vgg16_weights(model, source) == 13
    reference = keras.Model(source.input, source.get_layer("block5_conv3").output)
    x = tf.random.normal((2, 64, 64, 3))
    expected = reference(x[..., ::-1]).numpy()  # keras takes BGR; the copy takes RGB
    np.testing.assert_allclose(model(x)["C4"].numpy(), expected,
                               atol=1e-4 * np.abs(expected).max(), rtol=1e-4)
    with pytest.raises(ValueError, match="weights"):
        VGG16(weights="vgg.npz")
    config = model.get_config()
    assert VGG16.from_config(config).get_config() == config


# ---------------------------------------------------------------- layer contracts


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_bottleneck_and_stage_contracts(stride_in_1x1):
    x = tf.random.normal((2, 9, 7, 8))
    block = Bottleneck(4, stride=2, projection=True, stride_in_1x1=stride_in_1x1, norm="bn",
                       name="conv3_block1")
    out = check_layer_contract(block, x)
    assert out.shape == (2, 5, 4, 16)  # ceil(9 / 2), ceil(7 / 2), 4 * filters
    assert block.conv_a.name == "conv3_block1_1_conv"  # keras.applications naming
    stage = ResNetStage(2, 4, stride=1, dilation=2, stride_in_1x1=stride_in_1x1, name="conv5")
    out = check_layer_contract(stage, x)
    assert out.shape == (2, 9, 7, 16)
    assert [b.name for b in stage.blocks] == ["conv5_block1", "conv5_block2"]
    with pytest.raises(ValueError, match="projection"):
        Bottleneck(4, stride=2)


def test_backbone_models_satisfy_layer_contract():
    x = tf.random.normal((1, 32, 32, 3))
    check_layer_contract(TinyBackbone(widths=(8, 8, 8, 8)), x)
    check_layer_contract(ResNet(50, stages=("C2",), name="r50_c2"), x)
