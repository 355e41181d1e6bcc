"""Figures of ShapesWorld as the current renderer draws it.

- ``docs/shapesworld.png``: a few scenes, image | mask (with legend) | depth (metres);
- ``docs/view_pairs.png`` (``--view_pairs``): the positive pairs of the embedded default's pretraining, two
  renders of one scene that share its geometry (hence its label, mask and depth) and redraw its appearance.

Beside each PNG a ``.json`` sidecar records the arguments and a SHA-256 digest of the rendered arrays, so a
test can tell whether the committed figure still shows what ``render_scenes`` draws today.

    python scripts/make_shapes_figure.py --output docs/shapesworld.png
    python scripts/make_shapes_figure.py --view_pairs --output docs/view_pairs.png
"""

import argparse
import hashlib
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

import torch  # noqa: E402

from .data.synthetic import MAX_DEPTH, NUM_CLASSES, SHAPE_CLASSES, render_scenes, scene_streams  # noqa: E402

MASK_COLOURS = ["#202020", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#42d4f4"]


def scenes(num: int, image_size: int, seed: int, start: int, view_pairs: bool = False) -> list[dict]:
    """The batches a figure draws: one, or the two appearance renders of the same scenes."""
    if view_pairs:
        return [render_scenes(num, image_size, seed=seed, start=start, appearance=a) for a in (0, 1)]
    return [render_scenes(num, image_size, seed=seed, start=start)]


def digest(batches: list[dict]) -> str:
    """SHA-256 over the rendered arrays (pixels quantised to 8 bits, masks, depth in millimetres)."""
    h = hashlib.sha256()
    for batch in batches:
        h.update((batch["pixel_values"] * 255).round().to(torch.uint8).numpy().tobytes())
        h.update(batch["mask"].to(torch.uint8).numpy().tobytes())
        h.update((batch["depth"] * 1000).round().to(torch.int32).numpy().tobytes())
        h.update(batch["labels"].to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def _mask_style():
    cmap = ListedColormap(MASK_COLOURS[: NUM_CLASSES + 1])
    return cmap, BoundaryNorm([k - 0.5 for k in range(NUM_CLASSES + 2)], cmap.N)


def make_figure(num: int = 6, image_size: int = 128, seed: int = 0, start: int = 0, batch: dict | None = None):
    batch = batch if batch is not None else render_scenes(num, image_size=image_size, seed=seed, start=start)
    cmap, norm = _mask_style()
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


def view_pairs_figure(pair: list[dict]):
    """Rows of: render A | render B | the mask and the depth both renders share."""
    first, second = pair
    num = first["pixel_values"].shape[0]
    assert torch.equal(first["mask"], second["mask"]) and torch.equal(first["depth"], second["depth"])
    cmap, norm = _mask_style()
    fig, axes = plt.subplots(num, 4, figsize=(9.0, 2.3 * num), dpi=100, squeeze=False)
    for i in range(num):
        label = SHAPE_CLASSES[int(first["labels"][i])]
        for j, batch in enumerate(pair):
            axes[i, j].imshow(batch["pixel_values"][i].permute(1, 2, 0).numpy())
            axes[i, j].set_title(f"render {'AB'[j]} (label: {label})", fontsize=9)
        axes[i, 2].imshow(first["mask"][i].numpy(), cmap=cmap, norm=norm, interpolation="nearest")
        axes[i, 2].set_title("mask (shared)", fontsize=9)
        axes[i, 3].imshow(first["depth"][i].numpy(), cmap="magma_r", vmin=0, vmax=MAX_DEPTH)
        axes[i, 3].set_title("depth (shared)", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Pretraining's positive pairs: two renders of one scene share its geometry, nothing else", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def save_png(fig, path: str | Path, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    # a 256-colour palette keeps the noisy renders small (< 300 KB) at no visible cost
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True, dpi=(dpi, dpi))


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="PNG to write (default: docs/shapesworld.png, docs/view_pairs.png)")
    parser.add_argument("--view_pairs", action="store_true", help="draw the pretraining's positive pairs instead")
    parser.add_argument("--num", type=int, default=None, help="scenes (default: 6, 3 view pairs)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=10, help="first sample (10..15 show occlusion)")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)
    output = Path(args.output or ("docs/view_pairs.png" if args.view_pairs else "docs/shapesworld.png"))
    num = args.num or (3 if args.view_pairs else 6)
    stream = scene_streams(args.seed)["pretraining"] if args.view_pairs else args.seed
    batches = scenes(num, args.image_size, stream, args.start, args.view_pairs)
    fig = view_pairs_figure(batches) if args.view_pairs else make_figure(batch=batches[0])
    save_png(fig, output, args.dpi)
    sidecar = dict(view_pairs=args.view_pairs, num=num, image_size=args.image_size, seed=stream, start=args.start,
                   digest=digest(batches))
    output.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {output} and {output.with_suffix('.json').name}")
    return output


if __name__ == "__main__":
    main()
