"""Linear segmentation head (BatchNorm + 1x1 conv on the patch grid) with sliding windows.

Paper: Kowalczuk et al., https://arxiv.org/abs/2407.12588, following DINOv2's "linear" head
(Oquab et al., https://arxiv.org/abs/2304.07193): patch tokens after the final layer norm ->
`[B, D, h, w]` -> BatchNorm2d(D) -> Conv2d(D, C, 1) -> bilinear upsampling to the input size.

Sliding windows (decided): `forward` tiles the input with `window_size`-square windows at
`window_stride` whenever the image is larger than the window in either dimension, in training
and in evaluation alike (so SegPGD attacks the exact function that is evaluated). All windows of
all images go through the encoder in ONE batched call, and overlapping **logits** are averaged
(the reference code averaged softmax probabilities: reference-notes D12). An image no larger
than the window is one plain forward. Training normally feeds crops of the window size, which
is then also one plain forward. Window and image sides that are not multiples of the patch size
are centre-padded with the encoder mean (zero after normalisation) and cropped back.

Shapes: `pixel_values` `[B, 3, H, W]` in [0, 1]; `labels` `[B, H, W]` (ignore_index skipped);
output `SemanticSegmenterOutput(logits [B, C, H, W], loss)` at the input resolution.

Example:
    >>> model = SSLForSemanticSegmentation.from_encoder("dinov2-small", num_labels=150, image_size=518)
    >>> model(torch.rand(1, 3, 518, 700)).logits.shape          # [1, 150, 518, 700]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import SemanticSegmenterOutput

from ..losses import segmentation_loss
from .configuration import SegmentationHeadConfig
from .modeling import SSLHeadPreTrainedModel, centre_pad

__all__ = ["SSLForSemanticSegmentation", "sliding_window_logits", "window_count_map", "window_crops", "window_positions"]


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis: every `stride`, plus a last window flush with the border.

    Examples: (448, 224, 100) -> [0, 100, 200, 224]; (1036, 518, 341) -> [0, 341, 518];
    a side no larger than the window -> [0] (the window then shrinks to the side).
    """
    window = min(window, size)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    wh, ww = min(window, height), min(window, width)
    ys, xs = window_positions(height, window, stride), window_positions(width, window, stride)
    return [(y, x, wh, ww) for y in ys for x in xs]


def window_count_map(height: int, width: int, window: int, stride: int, device: torch.device | str | None = None) -> Tensor:
    """`[H, W]` number of windows covering each pixel (all >= 1 by construction)."""
    counts = torch.zeros(height, width, device=device)
    for y, x, wh, ww in _windows(height, width, window, stride):
        counts[y : y + wh, x : x + ww] += 1
    return counts


def window_crops(pixels: Tensor, window: int, stride: int) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
    """Every window of every image, window-major: `[n * B, 3, wh, ww]`, and the `n` windows `(y, x, h, w)`."""
    windows = _windows(*pixels.shape[-2:], window, stride)
    if len(windows) == 1:
        return pixels, windows
    return torch.cat([pixels[:, :, y : y + wh, x : x + ww] for y, x, wh, ww in windows]), windows


def sliding_window_logits(
    predict: Callable[[Tensor], Tensor], pixels: Tensor, window: int, stride: int
) -> Tensor:
    """Average the logits of overlapping windows.

    Args:
        predict: maps `[N, 3, h, w]` crops to `[N, C, h, w]` logits (one batched call).
        pixels: `[B, 3, H, W]`.
        window, stride: window side and step in pixels.

    Returns:
        `[B, C, H, W]` logits, differentiable with respect to `pixels`.
    """
    b, _, height, width = pixels.shape
    crops, windows = window_crops(pixels, window, stride)  # [n*B, 3, wh, ww]
    if len(windows) == 1:
        return predict(pixels)
    logits = predict(crops)
    logits = logits.view(len(windows), b, *logits.shape[1:])  # [n, B, C, wh, ww]
    total = logits.new_zeros(b, logits.shape[2], height, width)
    counts = logits.new_zeros(1, 1, height, width)
    for i, (y, x, wh, ww) in enumerate(windows):  # accumulation only; the forward was batched
        total[:, :, y : y + wh, x : x + ww] += logits[i]
        counts[:, :, y : y + wh, x : x + ww] += 1
    return total / counts


class SSLForSemanticSegmentation(SSLHeadPreTrainedModel):
    """Frozen encoder + BatchNorm2d + 1x1 conv on post-LN patch tokens, sliding-window inference."""

    config_class = SegmentationHeadConfig

    def __init__(self, config: SegmentationHeadConfig, encoder=None):
        super().__init__(config, encoder=encoder)
        dim = self.encoder.hidden_size
        self.batchnorm = nn.BatchNorm2d(dim)
        self.classifier = nn.Conv2d(dim, config.num_labels, kernel_size=1)
        self.post_init()

    def window_logits(self, pixels: Tensor) -> Tensor:
        """Logits of whole windows: `[N, 3, h, w]` -> `[N, C, h, w]` (no tiling)."""
        return self._decode(self.encode_features(pixels), pixels.shape[-2:])

    def encode_features(self, pixel_values: Tensor) -> Tensor:
        """Post-LN patch grid `[B, D, h', w']` of one window (input no larger than the window)."""
        padded, _ = centre_pad(pixel_values, self.patch_size, fill=self.encoder.mean)
        return self.encoder(padded).patch_grid()

    def read_tokens(self, pixel_values: Tensor) -> Tensor:
        """What the head reads, for EmbedAttack: the post-LN patch tokens of every (padded) window,
        `[B, n_windows * D * h' * w']`, from the same windows as `forward`."""
        crops, windows = window_crops(pixel_values, self.config.window_size, self.config.window_stride)
        features = self.encode_features(crops)  # [n*B, D, h', w']
        return features.reshape(len(windows), pixel_values.shape[0], -1).transpose(0, 1).flatten(1)

    def _decode(self, features: Tensor, image_size) -> Tensor:
        h, w = image_size
        ph, pw = h + (-h % self.patch_size), w + (-w % self.patch_size)
        top, left = (ph - h) // 2, (pw - w) // 2  # as centre_pad
        logits = self.classifier(self.batchnorm(features))  # [N, C, h', w']
        logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
        return logits[:, :, top : top + h, left : left + w]

    def forward_features(self, features: Tensor, image_size, labels: Tensor | None = None) -> SemanticSegmenterOutput:
        """The head alone on `encode_features` output of single-window images (training caches those)."""
        logits = self._decode(features, image_size)
        loss = segmentation_loss(logits, labels, self.config.ignore_index) if labels is not None else None
        return SemanticSegmenterOutput(loss=loss, logits=logits)

    def forward(
        self,
        pixel_values: Tensor | None = None,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput:
        """Args:
            pixel_values: `[B, 3, H, W]` in [0, 1].
            labels: optional `[B, H, W]` masks; adds the cross-entropy `loss` (ignore_index skipped).
            features, image_size: precomputed `encode_features` output of single-window images and
                their size, instead of pixels (cached training).
        """
        if features is not None:
            return self.forward_features(features, tuple(image_size), labels)
        logits = sliding_window_logits(
            self.window_logits, pixel_values, self.config.window_size, self.config.window_stride
        )
        loss = segmentation_loss(logits, labels, self.config.ignore_index) if labels is not None else None
        return SemanticSegmenterOutput(loss=loss, logits=logits)
