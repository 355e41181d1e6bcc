"""Render a few ShapesWorld samples as a figure: image | mask (with legend) | depth (metres).

    python scripts/make_shapes_figure.py --output docs/shapesworld.png
"""

import argparse
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from hf_ssl_robust.data.synthetic import MAX_DEPTH, NUM_CLASSES, SHAPE_CLASSES, render_scenes  # noqa: E402

MASK_COLOURS = ["#202020", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#42d4f4"]


def make_figure(num: int = 6, image_size: int = 128, seed: int = 0, start: int = 0):
    batch = render_scenes(num, image_size=image_size, seed=seed, start=start)
    cmap = ListedColormap(MASK_COLOURS[: NUM_CLASSES + 1])
    norm = BoundaryNorm([k - 0.5 for k in range(NUM_CLASSES + 2)], cmap.N)
    fig, axes = plt.subplots(num, 3, figsize=(7.2, 2.3 * num), dpi=100, squeeze=False)
    for i in range(num):
        label = SHAPE_CLASSES[int(batch["labels"][i])]
        axes[i, 0].imshow(batch["pixel_values"][i].permute(1, 2, 0).numpy())
        axes[i, 0].set_title(f"image (label: {label})", fontsize=9)
        axes[i, 1].imshow(batch["mask"][i].numpy(), cmap=cmap, norm=norm, interpolation="nearest")
        axes[i, 1].set_title("mask", fontsize=9)
        im = axes[i, 2].imshow(batch["depth"][i].numpy(), cmap="magma_r", vmin=0, vmax=MAX_DEPTH)
        axes[i, 2].set_title("depth", fontsize=9)
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.04).set_label("metres", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=MASK_COLOURS[k], label=name) for k, name in enumerate(("background", *SHAPE_CLASSES))]
    fig.legend(handles=handles, loc="lower center", ncol=NUM_CLASSES + 1, fontsize=8, frameon=False)
    fig.suptitle("ShapesWorld: image, segmentation mask, metric depth", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/shapesworld.png")
    parser.add_argument("--num", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=10, help="first sample (10..15 show occlusion)")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args()
    fig = make_figure(args.num, args.image_size, args.seed, args.start)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=args.dpi, format="png")
    # a 256-colour palette keeps the noisy renders small (< 300 KB) at no visible cost
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(args.output, optimize=True, dpi=(args.dpi, args.dpi))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
