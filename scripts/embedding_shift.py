"""How far EmbedAttack moves an encoder's tokens: relative L2 change and cosine, CLS and patch tokens.

    python scripts/embedding_shift.py                                   # the two bundled encoders
    python scripts/embedding_shift.py --encoders dinov2-small ./my-robust-encoder --dataset cifar10 --image_size 224

The representation-level view of EmbedAttack robustness: it needs no head, so it also tells a
robust encoder from a standard one when the heads are too weak for task metrics to move.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from hf_ssl_robust import load_encoder, make_attack
from hf_ssl_robust.data import get_dataset_spec, make_dataset
from hf_ssl_robust.data.loading import collate
from hf_ssl_robust.encoders import bundled_encoders
from hf_ssl_robust.results import display_name, parse_eps, write_json


def shift(encoder, pixels: torch.Tensor, tokens: str, eps: float, steps: int, batch_size: int) -> dict[str, float]:
    """Mean relative L2 change and cosine of the attacked tokens over `pixels`."""
    rel, cos = [], []
    for chunk in pixels.split(batch_size):
        adv = make_attack("embed", eps=eps, steps=steps, tokens=tokens, seed=0).perturb(encoder, chunk).pixels
        with torch.no_grad():
            clean, attacked = encoder(chunk), encoder(adv)
        a, b = (clean.cls, attacked.cls) if tokens == "cls" else (clean.patches, attacked.patches)
        rel.append(((b - a).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-12)).flatten())
        cos.append(F.cosine_similarity(a, b, dim=-1).flatten())
    return {"relative_l2": torch.cat(rel).mean().item(), "cosine": torch.cat(cos).mean().item()}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", nargs="+", default=None, help="default: the bundled encoders")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    spec = get_dataset_spec(args.dataset, task="classification")
    data = make_dataset(spec, "eval", num_samples=args.num_samples, image_size=args.image_size or spec.image_size)
    n = min(args.num_samples, len(data))
    pixels = collate([data[i] for i in range(n)])["pixel_values"]
    eps = parse_eps(args.eps)
    rows = []
    print(f"EmbedAttack ε={args.eps}, {args.steps} steps, {n} {args.dataset} images: mean relative L2 change (cosine) of the tokens")
    print("| encoder | CLS | patch tokens |\n|---|---|---|")
    for name in args.encoders or list(bundled_encoders()):
        encoder = load_encoder(name).eval()
        row = {"encoder": name, **{t: shift(encoder, pixels, t, eps, args.steps, args.batch_size) for t in ("cls", "patch")}}
        rows.append(row)
        fmt = lambda r: f"{r['relative_l2']:.3f} ({r['cosine']:.3f})"  # noqa: E731
        print(f"| {display_name(name)} | {fmt(row['cls'])} | {fmt(row['patch'])} |", flush=True)
    if args.output:
        write_json(args.output, rows)
    return rows


if __name__ == "__main__":
    main()
