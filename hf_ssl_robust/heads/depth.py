"""Linear depth head: 256-bin classification-regression on pre-LN tokens (DINOv2 "lin. 1").

Paper: Kowalczuk et al., https://arxiv.org/abs/2407.12588, with DINOv2's linear depth head
(Oquab et al., https://arxiv.org/abs/2304.07193) and the bin decoding of AdaBins-style heads:

    tokens of the last block BEFORE the final layer norm: grid [B, D, h, w], CLS [B, D]
    -> concat(grid, CLS broadcast)   [B, 2D, h, w]
    -> bilinear x4 upsampling        [B, 2D, 4h, 4w]      (-> optional BatchNorm2d(2D))
    -> Conv2d(2D, n_bins, 1)         [B, K, 4h, 4w]
    -> w = relu(logit) + 0.1, normalised to sum 1 over the K bins
    -> depth = sum_k w_k * centre_k, centres uniform on [min_depth, max_depth]
    -> bilinear resize to the (padded) input size, crop the padding -> [B, H, W]

Decisions:
    * No BatchNorm by default (`use_batchnorm=False`): the DINOv2 linear depth head has it
      commented out and the paper's code follows it. With BN off, the 1x1 conv runs BEFORE the x4
      upsampling: both are linear and bilinear weights sum to 1, so the result is the same up to
      rounding while the upsampled tensor has K = 256 channels instead of 2D (1536 for ViT-B).
    * Speed (the head's cost is all in the [B, K, 4h, 4w] tensor): the x4 bilinear upsampling is
      two small matmuls with the exact 1-D interpolation matrices (3x faster than `interpolate`
      forward + backward on CPU), and the bin decoding is one 1x1 convolution onto (sum_k w_k c_k,
      sum_k w_k), so the normalised weights are never materialised. Same numbers up to rounding.
    * Inputs whose sides are not multiples of the encoder's own patch size are centre-padded (fill
      = encoder mean, i.e. zero after normalisation) to a multiple of THAT patch size (not of 14:
      reference-notes B10), predicted, and the padding is cropped off the full-size prediction
      (no misaligning resize of the padded prediction into the unpadded frame).
    * The loss is `losses.depth_loss` averaged over the batch, on pixels with 0 < d <= max_depth
      (the metric's mask).

Shapes: `pixel_values` `[B, 3, H, W]` in [0, 1]; `labels` `[B, H, W]` metres (0 = invalid);
output `DepthEstimatorOutput(predicted_depth [B, H, W], loss)`, values in [min_depth, max_depth].

Example:
    >>> model = SSLForDepthEstimation.from_encoder("dinov2-small", image_size=518)
    >>> model(torch.rand(1, 3, 480, 640)).predicted_depth.shape       # [1, 480, 640]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import DepthEstimatorOutput

from ..losses import depth_loss
from .configuration import DepthHeadConfig
from .modeling import SSLHeadPreTrainedModel, centre_pad

__all__ = ["SSLForDepthEstimation"]

_BIN_WEIGHT_FLOOR = 0.1  # "linear" normalisation: relu(logit) + 0.1 keeps every bin alive


def _interp_matrix(n: int, size: int, device, dtype) -> Tensor:
    """`[size, n]` weights of 1-D linear resizing n -> size (`interpolate(..., align_corners=False)`)."""
    eye = torch.eye(n, device=device, dtype=dtype)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0, :].T


def bilinear_upsample(x: Tensor, factor: int) -> Tensor:
    """`F.interpolate(x, scale_factor=factor, mode="bilinear")` for an integer factor, as two matmuls."""
    h, w = x.shape[-2:]
    rows = _interp_matrix(h, h * factor, x.device, x.dtype)
    cols = _interp_matrix(w, w * factor, x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.T)


class SSLForDepthEstimation(SSLHeadPreTrainedModel):
    """Frozen encoder + bilinear x4 upsampling + 1x1 conv to depth bins."""

    config_class = DepthHeadConfig

    def __init__(self, config: DepthHeadConfig, encoder=None):
        super().__init__(config, encoder=encoder)
        channels = 2 * self.encoder.hidden_size  # patch token ++ CLS token
        self.batchnorm = nn.BatchNorm2d(channels) if config.use_batchnorm else None
        self.conv_depth = nn.Conv2d(channels, config.n_bins, kernel_size=1)
        self.post_init()

    def bin_centres(self, device=None, dtype=None) -> Tensor:
        """`[n_bins]` depth of each bin, uniform on [min_depth, max_depth]."""
        c = self.config
        return torch.linspace(c.min_depth, c.max_depth, c.n_bins, device=device, dtype=dtype)

    def features(self, pixels: Tensor) -> Tensor:
        """`[B, 2D, h, w]`: pre-LN patch grid with the pre-LN CLS token appended to every position."""
        out = self.encoder(pixels, pre_norm=True)
        grid = out.patch_grid()  # [B, D, h, w]
        return torch.cat([grid, out.cls[:, :, None, None].expand_as(grid)], dim=1)

    def forward(
        self,
        pixel_values: Tensor | None = None,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        **kwargs,
    ) -> DepthEstimatorOutput:
        """Args:
            pixel_values: `[B, 3, H, W]` in [0, 1], any size.
            labels: optional `[B, H, W]` depth in metres (0 = invalid); adds `loss`.
            features, image_size: precomputed `encode_features` output and the input size, instead
                of pixels (cached training).
        """
        if features is None:
            features, image_size = self.encode_features(pixel_values), pixel_values.shape[-2:]
        return self.forward_features(features, tuple(image_size), labels)

    def encode_features(self, pixel_values: Tensor) -> Tensor:
        """`[B, 2D, h', w']` features of the input centre-padded to a multiple of the patch size."""
        padded, _ = centre_pad(pixel_values, self.patch_size, fill=self.encoder.mean)
        return self.features(padded)

    def read_tokens(self, pixel_values: Tensor) -> Tensor:
        """What the head reads, for EmbedAttack: the pre-LN CLS token and patch tokens of the input
        centre-padded as in `forward`, `[B, (1 + h' * w') * D]` (CLS first). The head concatenates CLS
        to every patch token, so both are attacked; CLS counts once, not once per position."""
        padded, _ = centre_pad(pixel_values, self.patch_size, fill=self.encoder.mean)
        out = self.encoder(padded, pre_norm=True)
        return torch.cat([out.cls, out.patches.flatten(1)], dim=1)

    def forward_features(self, features: Tensor, image_size, labels: Tensor | None = None) -> DepthEstimatorOutput:
        """The head alone, on `encode_features` output (training caches those)."""
        c = self.config
        h, w = image_size
        ph, pw = h + (-h % self.patch_size), w + (-w % self.patch_size)
        top, left = (ph - h) // 2, (pw - w) // 2  # as centre_pad
        factor = int(c.upsample_factor)
        if self.batchnorm is not None:
            logits = self.conv_depth(self.batchnorm(bilinear_upsample(features, factor)))
        else:  # same result, cheaper: conv and bilinear upsampling commute
            logits = bilinear_upsample(self.conv_depth(features), factor)  # [B, K, 4h', 4w']
        # depth = sum_k w_k c_k / sum_k w_k with w = relu(logit) + floor: one 1x1 conv gives both sums.
        centres = self.bin_centres(logits.device, logits.dtype)
        proj = torch.stack([centres, torch.ones_like(centres)]).view(2, -1, 1, 1)
        sums = F.conv2d(torch.relu(logits), proj) + _BIN_WEIGHT_FLOOR * proj.sum(dim=(1, 2, 3)).view(1, 2, 1, 1)
        depth = sums[:, 0] / sums[:, 1]
        depth = F.interpolate(depth[:, None], size=(ph, pw), mode="bilinear", align_corners=False)[:, 0]
        depth = depth[:, top : top + h, left : left + w].clamp(c.min_depth, c.max_depth)  # clamp: rounding only
        loss = None
        if labels is not None:
            valid = (labels > 0) & (labels <= c.max_depth)
            loss = depth_loss(depth, labels.to(depth.dtype), valid).mean()
        return DepthEstimatorOutput(loss=loss, predicted_depth=depth)
