"""Heads: shapes, losses, frozen encoder, self-contained save/load, sliding windows, depth padding."""

import logging
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_backbone
from transformers import (
    AutoConfig,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)
from transformers.modeling_outputs import DepthEstimatorOutput, ImageClassifierOutput, SemanticSegmenterOutput
from transformers.utils import logging as hf_logging

from hf_ssl_robust.heads import (
    HEADS,
    ClassificationHeadConfig,
    DepthHeadConfig,
    SegmentationHeadConfig,
    SSLForImageClassification,
    window_count_map,
    window_positions,
)

KWARGS = {
    "classification": dict(num_labels=5, image_size=32),
    "segmentation": dict(num_labels=4, image_size=32, window_stride=20),
    "depth": dict(image_size=32),
}
AUTO = {
    "classification": AutoModelForImageClassification,
    "segmentation": AutoModelForSemanticSegmentation,
    "depth": AutoModelForDepthEstimation,
}


def make_head(task, encoder, seed=0, **kw):
    torch.manual_seed(seed)
    return HEADS[task].from_encoder(encoder, **{**KWARGS[task], **kw})


def make_labels(task, b, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if task == "classification":
        return torch.randint(0, 5, (b,), generator=gen)
    if task == "segmentation":
        masks = torch.randint(0, 4, (b, h, w), generator=gen)
        masks[:, :2] = 255
        return masks
    depth = torch.rand(b, h, w, generator=gen) * 9 + 0.5
    depth[:, :, :3] = 0  # invalid
    return depth


def output_tensor(task, out):
    return out.predicted_depth if task == "depth" else out.logits


@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
@pytest.mark.parametrize("task", list(HEADS))
def test_head__output_types_and_shapes(task, size, tiny_encoder):
    model = make_head(task, tiny_encoder).eval()
    pixels = torch.rand(2, 3, *size)
    out = model(pixels)
    expected = {
        "classification": (ImageClassifierOutput, (2, 5)),
        "segmentation": (SemanticSegmenterOutput, (2, 4, *size)),
        "depth": (DepthEstimatorOutput, (2, *size)),
    }[task]
    assert isinstance(out, expected[0]) and out.loss is None
    assert output_tensor(task, out).shape == expected[1]


@pytest.mark.parametrize("task", list(HEADS))
def test_head__loss_backprops_into_head_only(task, tiny_encoder):
    model = make_head(task, tiny_encoder).train()
    pixels = torch.rand(2, 3, 32, 40)
    out = model(pixels, labels=make_labels(task, 2, 32, 40))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("encoder."):
            assert param.grad is None and not param.requires_grad, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert {id(p) for p in model.head_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("task", list(HEADS))
def test_head__encoder_stays_eval_and_frozen(task, tiny_encoder):
    model = make_head(task, tiny_encoder)
    model.train()
    assert model.training
    assert not any(m.training for m in model.encoder.modules())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    if task == "segmentation":
        assert model.batchnorm.training


def test_head__construction_keeps_pretrained_encoder_weights(tiny_encoder):
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    model = make_head("depth", tiny_encoder)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert model.config.encoder_config["model_type"] == "dinov2"
    assert list(model.config.image_mean) == [0.485, 0.456, 0.406]


@pytest.mark.parametrize(
    "kind, task",
    [("dinov2", task) for task in HEADS]
    + [("vit", "depth"), ("vit", "segmentation"), ("dinov2_reg", "classification")],
)
def test_head__save_load_round_trip_is_self_contained(kind, task, tmp_path, caplog):
    encoder_dir = tmp_path / "encoder"
    make_tiny_backbone(kind, patch_size=16 if kind == "vit" else 8, seed=3).save_pretrained(encoder_dir)
    model = make_head(task, str(encoder_dir))
    if task == "segmentation":  # non-trivial BatchNorm statistics
        with torch.no_grad():
            model.train()(torch.rand(4, 3, 32, 32))
    model.eval()
    pixels = torch.rand(2, 3, 32, 48)
    expected = output_tensor(task, model(pixels))

    propagate = logging.getLogger("transformers").propagate
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            model.save_pretrained(tmp_path / "head", embed_encoder=True)
            shutil.rmtree(encoder_dir)  # the head must not need its original encoder
            assert os.environ.get("HF_HUB_OFFLINE") == "1"
            reloaded = HEADS[task].from_pretrained(tmp_path / "head")
            via_auto = AUTO[task].from_pretrained(tmp_path / "head")
    finally:
        logging.getLogger("transformers").propagate = propagate
    noisy = ("shared", "newly initialized", "not used", "missing", "unexpected")
    assert not [r.getMessage() for r in caplog.records if any(w in r.getMessage().lower() for w in noisy)]
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == [
        "config.json", "model.safetensors", "modeling_ssl_heads.py", "preprocessor_config.json"]

    state = model.state_dict()
    for loaded in (reloaded, via_auto):
        assert type(loaded) is HEADS[task]
        assert not loaded.training and not any(p.requires_grad for p in loaded.encoder.parameters())
        assert loaded.state_dict().keys() == state.keys()
        for key, value in loaded.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(loaded.encoder.mean, model.encoder.mean, rtol=0, atol=0)
        torch.testing.assert_close(loaded.encoder.std, model.encoder.std, rtol=0, atol=0)
        torch.testing.assert_close(output_tensor(task, loaded(pixels)), expected, rtol=0, atol=0)


def test_configs__registered_with_auto_classes():
    for config_cls in (ClassificationHeadConfig, SegmentationHeadConfig, DepthHeadConfig):
        assert type(AutoConfig.for_model(config_cls.model_type)) is config_cls
    assert ClassificationHeadConfig.model_type == "ssl_linear_classifier"
    assert SegmentationHeadConfig.model_type == "ssl_linear_segmenter"
    assert DepthHeadConfig.model_type == "ssl_linear_depth"


def test_configs__validation():
    with pytest.raises(ValueError, match="window_stride"):
        SegmentationHeadConfig(window_size=32, window_stride=40)
    with pytest.raises(ValueError, match="min_depth"):
        DepthHeadConfig(min_depth=10.0, max_depth=1.0)
    with pytest.raises(ValueError, match="model_type"):
        ClassificationHeadConfig(encoder_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="from_encoder"):
        SSLForImageClassification(ClassificationHeadConfig())


def test_segmentation_config__paper_window_defaults():
    assert SegmentationHeadConfig(image_size=224).window_stride == 100
    assert SegmentationHeadConfig(image_size=518).window_stride == 341
    cfg = SegmentationHeadConfig(image_size=64)
    assert (cfg.window_size, cfg.window_stride) == (64, 32)


# -- sliding window ----------------------------------------------------------------------------
def test_window_positions__paper_examples():
    assert window_positions(448, 224, 100) == [0, 100, 200, 224]
    assert window_positions(1036, 518, 341) == [0, 341, 518]
    assert window_positions(224, 224, 100) == [0]
    assert window_positions(20, 32, 10) == [0]


def test_sliding_window__window_sized_image_is_one_plain_forward(tiny_encoder):
    model = make_head("segmentation", tiny_encoder).eval()
    pixels = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels).logits, model.window_logits(pixels), rtol=0, atol=0)


def test_sliding_window__wide_image_equals_slow_loop(tiny_encoder):
    model = make_head("segmentation", tiny_encoder).eval()
    with torch.no_grad():  # make the BatchNorm and bias non-trivial
        model.batchnorm.running_mean.normal_()
        model.classifier.bias.normal_()
    pixels = torch.rand(2, 3, 32, 80)
    assert (window_count_map(32, 80, 32, 20) >= 1).all()

    total, count = torch.zeros(2, 4, 32, 80), torch.zeros(32, 80)
    for x in window_positions(80, 32, 20):  # [0, 20, 40, 48]
        total[:, :, :, x : x + 32] += model.window_logits(pixels[:, :, :, x : x + 32])
        count[:, x : x + 32] += 1
    assert (count >= 1).all()
    torch.testing.assert_close(count, window_count_map(32, 80, 32, 20))
    torch.testing.assert_close(model(pixels).logits, total / count, rtol=1e-5, atol=1e-5)


def test_sliding_window__tall_and_wide_image_gradient(tiny_encoder):
    model = make_head("segmentation", tiny_encoder).eval()
    pixels = torch.rand(1, 3, 56, 70, requires_grad=True)
    logits = model(pixels).logits
    assert logits.shape == (1, 4, 56, 70)
    logits.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


# -- depth -------------------------------------------------------------------------------------
def test_depth__range_and_padding(tiny_encoder):
    model = make_head("depth", tiny_encoder, min_depth=0.5, max_depth=4.0).eval()
    with torch.no_grad():
        model.conv_depth.weight.mul_(300)  # push the bin weights far from uniform
    pixels = torch.rand(2, 3, 30, 45)  # not multiples of the patch size 8
    depth = model(pixels).predicted_depth
    assert depth.shape == (2, 30, 45)
    assert depth.min() >= 0.5 and depth.max() <= 4.0 and depth.std() > 0.01
    # Centre padding to 32x48 with the mean colour, predicting, then cropping is what it does:
    padded = model.encoder.mean.expand(2, 3, 32, 48).clone()
    padded[:, :, 1:31, 1:46] = pixels
    torch.testing.assert_close(model(padded).predicted_depth[:, 1:31, 1:46], depth, rtol=0, atol=0)


def test_depth__conv_before_upsampling_matches_paper_order(tiny_encoder):
    model = make_head("depth", tiny_encoder).eval()
    pixels = torch.rand(1, 3, 32, 40)
    feats = F.interpolate(model.features(pixels), scale_factor=4, mode="bilinear", align_corners=False)
    weights = torch.relu(model.conv_depth(feats)) + 0.1  # paper order: upsample, then conv
    weights = weights / weights.sum(1, keepdim=True)
    depth = torch.einsum("bkhw,k->bhw", weights, model.bin_centres())
    depth = F.interpolate(depth[:, None], size=(32, 40), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(model(pixels).predicted_depth, depth, rtol=1e-5, atol=1e-5)


def test_depth__reads_pre_norm_tokens_with_cls(tiny_encoder):
    model = make_head("depth", tiny_encoder).eval()
    pixels = torch.rand(1, 3, 32, 32)
    feats = model.features(pixels)
    out = tiny_encoder(pixels, pre_norm=True)
    assert feats.shape == (1, 64, 4, 4)
    torch.testing.assert_close(feats[:, :32], out.patch_grid())
    torch.testing.assert_close(feats[:, 32:], out.cls[:, :, None, None].expand(1, 32, 4, 4))


def test_depth__batchnorm_option(tiny_encoder):
    model = make_head("depth", tiny_encoder, use_batchnorm=True)
    out = model.train()(torch.rand(2, 3, 32, 32), labels=make_labels("depth", 2, 32, 32))
    out.loss.backward()
    assert model.batchnorm.weight.grad is not None


# -- DINO v1 style ViT (patch 16) --------------------------------------------------------------
@pytest.mark.parametrize("task", list(HEADS))
def test_head__vit_patch16(task, tiny_vit_path):
    model = make_head(task, tiny_vit_path).eval()
    assert model.patch_size == 16
    out = model(torch.rand(1, 3, 40, 50))  # depth pads to 48x64 (multiples of 16, not 14)
    shape = {"classification": (1, 5), "segmentation": (1, 4, 40, 50), "depth": (1, 40, 50)}[task]
    assert output_tensor(task, out).shape == shape


def test_head__encoder_normalisation_must_match_config(tiny_encoder):
    config = ClassificationHeadConfig(
        encoder_config=tiny_encoder.backbone.config.to_dict(), image_mean=(0.5, 0.5, 0.5), num_labels=3
    )
    with pytest.raises(ValueError, match="image_mean"):
        SSLForImageClassification(config, encoder=tiny_encoder)


@pytest.mark.parametrize("factor,size", [(4, (3, 5)), (2, (6, 4)), (4, (1, 7))])
def test_depth__matmul_upsampling_equals_interpolate(factor, size):
    from hf_ssl_robust.heads.depth import bilinear_upsample

    x = torch.randn(2, 5, *size, requires_grad=True)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(bilinear_upsample(x, factor), ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad((bilinear_upsample(x, factor) * g).sum(), x)
    (gr,) = torch.autograd.grad((ref * g).sum(), x)
    torch.testing.assert_close(gx, gr, rtol=1e-5, atol=1e-5)
