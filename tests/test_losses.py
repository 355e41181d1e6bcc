"""Losses against slow, obvious loop implementations and hand-derived values."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_ssl_robust.losses import depth_loss, gradient_loss, scale_invariant_log_loss, segmentation_loss


# -- slow references ---------------------------------------------------------------------------
def _g(pred, target, eps=1e-6):
    return math.log(max(pred, eps)) - math.log(max(target, eps))


def ref_pixel(pred, target, valid, alpha=1.0, rho=0.85):
    out = []
    for b in range(pred.shape[0]):
        gs = [
            _g(pred[b, i, j].item(), target[b, i, j].item())
            for i in range(pred.shape[1])
            for j in range(pred.shape[2])
            if valid[b, i, j]
        ]
        if not gs:
            out.append(0.0)
            continue
        mean = sum(gs) / len(gs)
        mean_sq = sum(g * g for g in gs) / len(gs)
        out.append(alpha * math.sqrt(max(mean_sq - rho * mean * mean, 0.0)))
    return torch.tensor(out, dtype=torch.float64)


def ref_grad(pred, target, valid, num_scales=4):
    out = []
    for b in range(pred.shape[0]):
        total = 0.0
        for k in range(num_scales):
            s = 2**k
            rows, cols = range(0, pred.shape[1], s), range(0, pred.shape[2], s)
            pixels = {}  # (subsampled row, col) -> g, valid pixels only
            for a, i in enumerate(rows):
                for c, j in enumerate(cols):
                    if valid[b, i, j]:
                        pixels[a, c] = _g(pred[b, i, j].item(), target[b, i, j].item())
            diffs = []
            for (a, c), g in pixels.items():
                for na, nc in ((a, c + 1), (a + 1, c)):  # right neighbour (x), lower neighbour (y)
                    if (na, nc) in pixels:
                        diffs.append(abs(pixels[na, nc] - g))
            total += sum(diffs) / len(diffs) if diffs else 0.0
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def _random_depth(seed, shape=(4, 11, 13)):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen, dtype=torch.float64) * 9 + 0.5
    pred = torch.rand(shape, generator=gen, dtype=torch.float64) * 9 + 0.5
    valid = torch.rand(shape, generator=gen) > 0.3
    valid[-1] = False  # one image without any valid pixel
    valid[0, 0, 0] = True
    return pred, target, valid


# -- depth -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_depth_loss__matches_loop_reference(seed):
    pred, target, valid = _random_depth(seed)
    pix, grad = ref_pixel(pred, target, valid), ref_grad(pred, target, valid)
    torch.testing.assert_close(scale_invariant_log_loss(pred, target, valid), pix)
    torch.testing.assert_close(gradient_loss(pred, target, valid), grad)
    torch.testing.assert_close(depth_loss(pred, target, valid), pix + 0.5 * grad)
    torch.testing.assert_close(
        depth_loss(pred, target, valid, alpha=2.0, rho=0.5, grad_weight=0.25, num_scales=2),
        ref_pixel(pred, target, valid, alpha=2.0, rho=0.5) + 0.25 * ref_grad(pred, target, valid, num_scales=2),
    )


def test_depth_loss__default_valid_is_positive_target():
    pred, target, valid = _random_depth(3)
    target = torch.where(valid, target, torch.zeros_like(target))
    torch.testing.assert_close(depth_loss(pred, target), depth_loss(pred, target, valid))
    expected = ref_pixel(pred, target, valid) + 0.5 * ref_grad(pred, target, valid)
    torch.testing.assert_close(depth_loss(pred, target), expected)


def test_depth_loss__zero_when_pred_equals_target():
    _, target, valid = _random_depth(4)
    assert torch.equal(depth_loss(target.clone(), target, valid), torch.zeros(4, dtype=torch.float64))


def test_depth_loss__no_valid_pixel_gives_zero():
    pred, target = torch.rand(2, 8, 8) + 0.1, torch.zeros(2, 8, 8)
    pred.requires_grad_(True)
    loss = depth_loss(pred, target)
    assert torch.equal(loss, torch.zeros(2))
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("c", [0.5, 2.0, 3.7])
def test_scale_invariant__pred_scaled_by_constant(c):
    _, target, valid = _random_depth(5)
    valid[-1, 0, 0] = True
    for alpha, rho in ((1.0, 0.85), (2.0, 0.5)):
        expected = alpha * math.sqrt(1 - rho) * abs(math.log(c))
        loss = scale_invariant_log_loss(c * target, target, valid, alpha=alpha, rho=rho)
        torch.testing.assert_close(loss, torch.full((4,), expected, dtype=torch.float64))
    # a global scale has no gradient structure: the gradient term is exactly blind to it
    torch.testing.assert_close(gradient_loss(c * target, target, valid), torch.zeros(4, dtype=torch.float64))


def test_gradient_loss__sees_horizontal_edges():
    # Depth varies only along x (columns); every column is constant in y.
    target = torch.linspace(1.0, 5.0, 16).repeat(2, 12, 1)  # [2, 12, 16]
    pred = torch.full_like(target, 3.0)  # flat, wrong prediction
    loss = gradient_loss(pred, target)
    assert (loss > 0.1).all()
    # all of it comes from x differences: transposing H and W keeps the value (y differences only)
    torch.testing.assert_close(gradient_loss(pred.transpose(1, 2), target.transpose(1, 2)), loss)
    torch.testing.assert_close(loss.double(), ref_grad(pred, target, target > 0))


def test_gradient_loss__images_are_independent():
    # The reference code differenced along the batch axis (B8): here each image is on its own.
    pred, target, valid = _random_depth(6)
    batched = depth_loss(pred, target, valid)
    single = torch.cat([depth_loss(pred[i : i + 1], target[i : i + 1], valid[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single)
    shuffled = depth_loss(pred.flip(0), target.flip(0), valid.flip(0))
    torch.testing.assert_close(shuffled, batched.flip(0))


def test_depth_loss__gradients_finite():
    pred, target, valid = _random_depth(7)
    pred = pred.float()
    pred[0] = target[0].float()  # zero loss image
    pred[1, :3] = 0.0  # zero predictions hit the eps clamp
    pred.requires_grad_(True)
    depth_loss(pred, target.float(), valid).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[2].abs().sum() > 0


def test_depth_loss__bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        depth_loss(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        depth_loss(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="valid mask"):
        depth_loss(torch.rand(2, 4, 4), torch.rand(2, 4, 4), torch.ones(2, 4, 5, dtype=torch.bool))


# -- segmentation ------------------------------------------------------------------------------
def test_segmentation_loss__matches_loop_reference():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    masks = torch.randint(0, 5, (2, 6, 7), generator=gen)
    masks[torch.rand(2, 6, 7, generator=gen) < 0.3] = 255
    terms = [
        -torch.log_softmax(logits[b, :, i, j], 0)[masks[b, i, j]]
        for b in range(2)
        for i in range(6)
        for j in range(7)
        if masks[b, i, j] != 255
    ]
    torch.testing.assert_close(segmentation_loss(logits, masks), torch.stack(terms).mean())
    torch.testing.assert_close(segmentation_loss(logits, masks), F.cross_entropy(logits, masks, ignore_index=255))


def test_segmentation_loss__all_ignored_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 4), 7), ignore_index=7)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_segmentation_loss__bad_shapes():
    with pytest.raises(ValueError, match="Upsample"):
        segmentation_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 8, 8, dtype=torch.long))
