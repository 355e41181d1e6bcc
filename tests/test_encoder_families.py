"""Encoder families: a contract every registered family meets, and the ResNet family end to end."""

import json

import pytest
import torch
from conftest import make_tiny_backbone, one_thread
from transformers import AutoModel, BertConfig, BertModel

from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.defenses import DeACLConfig, train_deacl
from hf_ssl_robust.encoders import FAMILIES, PixelEncoder, centre_pad, load_encoder
from hf_ssl_robust.heads import HEADS

# one tiny maker per family: (kind for make_tiny_backbone, patch size asked for)
FAMILY_CASES = {"vit": ("vit", 16), "dinov2": ("dinov2", 8), "dinov2_with_registers": ("dinov2_reg", 8), "resnet": ("resnet", 8)}


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_resnet")
    make_tiny_backbone("resnet").save_pretrained(path)
    return path


def test_every_registered_family_has_a_contract_case():
    assert set(FAMILIES) == set(FAMILY_CASES)


@pytest.mark.parametrize("model_type", sorted(FAMILY_CASES))
def test_family_contract__tokens_grid_and_gradient(model_type, tmp_path):
    kind, patch = FAMILY_CASES[model_type]
    make_tiny_backbone(kind, patch_size=patch).save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path))
    assert encoder.config.model_type == model_type and not encoder.training
    p = encoder.patch_size
    x = torch.rand(2, 3, 2 * p, 3 * p, requires_grad=True)
    out = encoder(x)
    assert out.grid == (2, 3) == encoder.grid_size(2 * p, 3 * p)
    assert out.cls.shape == (2, encoder.hidden_size) and out.patches.shape == (2, 6, encoder.hidden_size)
    assert out.patch_grid().shape == (2, encoder.hidden_size, 2, 3)
    assert encoder(x, pre_norm=True).patches.shape == out.patches.shape
    # random projections, not plain sums: a sum over LayerNorm outputs is constant in x (see test_encoders)
    g = torch.Generator().manual_seed(0)
    ((out.cls * torch.randn(out.cls.shape, generator=g)).sum() + (out.patches * torch.randn(out.patches.shape, generator=g)).sum()).backward()
    assert x.grad.abs().sum() > 0


def test_resnet__tokens_equal_the_backbone_outputs(resnet_path):
    encoder = load_encoder(str(resnet_path))
    reference = AutoModel.from_pretrained(resnet_path).eval()
    assert encoder.patch_size == 8 and encoder.hidden_size == 32
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out, ref = encoder(x), reference(pixel_values=encoder.normalize(x))
    torch.testing.assert_close(out.cls, ref.pooler_output.flatten(1), rtol=0, atol=0)
    # patch i of row r is the feature map at (r, c), row-major
    torch.testing.assert_close(out.patches.view(2, 4, 6, 32).permute(0, 3, 1, 2), ref.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(encoder(x, pre_norm=True).patches, out.patches, rtol=0, atol=0)  # no final norm


@pytest.mark.parametrize("size", [(37, 53), (33, 40), (8, 9), (5, 5)])
def test_resnet__any_input_size_is_centre_padded_like_the_heads(resnet_path, size):
    encoder = load_encoder(str(resnet_path))
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = encoder(x)
        padded, _ = centre_pad(x, 8, fill=encoder.mean)
        ref = encoder.backbone(pixel_values=encoder.normalize(padded)).last_hidden_state
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    assert out.grid == (h, w) == encoder.grid_size(*size) == tuple(ref.shape[-2:])
    torch.testing.assert_close(out.patch_grid(), ref, rtol=0, atol=0)


def test_unknown_family_is_refused_with_the_supported_list(tmp_path):
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Unsupported encoder family 'bert'.*ResNet.*DINOv2"):
        load_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="Unsupported encoder family"):
        PixelEncoder(BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))


@pytest.mark.parametrize("task", list(HEADS))
def test_resnet__heads_save_and_reload_bit_identical(resnet_path, task, tmp_path):
    kwargs = {"classification": dict(num_labels=5), "segmentation": dict(num_labels=4), "depth": {}}[task]
    torch.manual_seed(0)
    model = HEADS[task].from_encoder(str(resnet_path), image_size=32, **kwargs).eval()
    x = torch.rand(2, 3, 32, 40)
    out = model(x)
    expected = out.predicted_depth if task == "depth" else out.logits
    assert expected.shape[0] == 2 and torch.isfinite(expected).all()
    model.save_pretrained(tmp_path / "head")
    reloaded = HEADS[task].from_pretrained(tmp_path / "head")
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0, msg=key)
    again = reloaded(x)
    torch.testing.assert_close(again.predicted_depth if task == "depth" else again.logits, expected, rtol=0, atol=0)


def test_resnet__attacks_keep_their_invariants(resnet_path):
    encoder = load_encoder(str(resnet_path))
    head = HEADS["classification"].from_encoder(encoder, num_labels=5, image_size=32).eval()
    x = torch.rand(3, 3, 30, 34)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    for name, model, target in (("embed", encoder, None), ("pgd", head, torch.tensor([0, 1, 2]))):
        result = make_attack(name, eps=8 / 255, steps=3, seed=0).perturb(model, x, target)
        assert (result.pixels - x).abs().max() <= 8 / 255 + 1e-7 and not torch.equal(result.pixels, x)
        assert result.pixels.min() >= 0 and result.pixels.max() <= 1
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items()) and not encoder.training


def test_resnet__deacl_two_steps_saves_an_automodel_backbone(resnet_path, tmp_path):
    cfg = DeACLConfig(encoder=str(resnet_path), image_size=32, num_train_samples=16, batch_size=8, max_steps=2,
                      output_dir=str(tmp_path / "twin"), checkpoint_every=0, log_every=1, eps="8/255")
    out = train_deacl(cfg)
    backbone = AutoModel.from_pretrained(out)
    assert type(backbone).__name__ == "ResNetModel"
    twin, teacher = load_encoder(out), load_encoder(str(resnet_path))
    assert any(not torch.equal(a, b) for a, b in zip(twin.state_dict().values(), teacher.state_dict().values()))
    assert json.loads((out / "deacl_config.json").read_text())["total_steps"] == 2
