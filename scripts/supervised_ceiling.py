"""How learnable is ShapesWorld for a tiny ViT? Train the embedded default's architecture *supervised*.

A ceiling for the self-supervised pretraining of `hf_ssl_robust.pretraining`: the same
`Dinov2Model` (hidden 128, 4 layers, patch 8, 64² input) plus a linear layer on the CLS token,
trained with cross-entropy on freshly rendered ShapesWorld scenes (their own stream,
`scene_streams()["supervised_ceiling"]`), scored on the validation split every `--eval_every` steps and once,
after the last step, on the test split (nothing is chosen from it). If supervised training needs N scenes to reach an accuracy, DINO
needs at least as many.

    python scripts/supervised_ceiling.py --steps 1200          # 2 CPU cores: ~5.5 min, 77k scenes
    python scripts/supervised_ceiling.py --steps 1200 --arch cnn --lr 3e-3   # is the data learnable? ~6.3 min
    python scripts/supervised_ceiling.py --steps 1200 --arch resnet --lr 2e-3   # the embedded default's architecture

`--arch cnn` swaps the ViT for a four-layer CNN (0.24 M parameters against the ViT's 0.83 M), a
control: if it learns where the ViT does not, the data is fine and the ViT's sample hunger is the
bottleneck (2 CPU cores: the CNN reaches 0.92 after 1200 steps, the ViT 0.35). `--patch_init
whiten` starts the ViT's patch embedding as in `pretrain_tiny.py --patch_init whiten`. `--arch resnet`
trains the embedded default's `ResNetModel` (the config of `pretrain_tiny.py --arch resnet`) on its pooled token.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel

from hf_ssl_robust.data import make_dataloader
from hf_ssl_robust.data.synthetic import render_scenes, scene_streams
from hf_ssl_robust.encoders import IMAGENET_MEAN, IMAGENET_STD
from hf_ssl_robust.results import write_json


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval_every", type=int, default=100)
    p.add_argument("--num_eval", type=int, default=None, help="test scenes (default: the whole test split)")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=["vit", "cnn", "resnet"], default="vit")
    p.add_argument("--patch_init", choices=["random", "whiten"], default="random")
    p.add_argument("--output", default=None, help="also write the curve as JSON here")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.arch == "vit":
        config = Dinov2Config(image_size=args.image_size, patch_size=8, hidden_size=128, num_hidden_layers=4,
                              num_attention_heads=2, mlp_ratio=4, layerscale_value=0.1)
        vit = Dinov2Model(config)
        if args.patch_init == "whiten":
            from hf_ssl_robust.pretraining import whiten_on_shapes

            whiten_on_shapes(vit, args.image_size, args.seed)
        backbone = lambda pixels: vit(pixel_values=pixels).last_hidden_state[:, 0]  # noqa: E731
        modules = [vit]
    elif args.arch == "resnet":
        resnet = ResNetModel(ResNetConfig(embedding_size=32, hidden_sizes=[64, 128], depths=[2, 2], layer_type="basic",
                                          downsample_in_first_stage=False))
        backbone = lambda pixels: resnet(pixel_values=pixels).pooler_output.flatten(1)  # noqa: E731
        modules = [resnet]
    else:
        def block(cin, cout):
            return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]

        cnn = torch.nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), torch.nn.Conv2d(128, 128, 3, padding=1),
                                  torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        backbone, modules = cnn, [cnn]
    head = torch.nn.Linear(128, 6)
    params = [p for m in modules + [head] for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    splits = {split: list(make_dataloader("shapes", split, task="classification", batch_size=256, num_samples=args.num_eval,
                                          image_size=args.image_size)) for split in ("validation", "test")}

    def logits(x):
        return head(backbone((x - mean) / std))

    def accuracy(split: str) -> float:
        for m in modules:
            m.eval()  # the ResNet's batch norm uses its running statistics
        with torch.no_grad():
            hits = sum((logits(b["pixel_values"]).argmax(-1) == b["labels"]).sum().item() for b in splits[split])
        for m in modules:
            m.train()
        return hits / sum(len(b["labels"]) for b in splits[split])

    curve, start = [], time.time()
    for step in range(args.steps):
        scenes = render_scenes(args.batch_size, args.image_size, seed=scene_streams(args.seed)["supervised_ceiling"], start=step * args.batch_size)
        x = scenes["pixel_values"]
        flip = torch.rand(x.shape[0]) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50)
        loss = F.cross_entropy(logits(x), scenes["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            row = {"step": step + 1, "scenes": (step + 1) * args.batch_size, "loss": round(loss.item(), 4),
                   "validation_accuracy": round(accuracy("validation"), 4), "seconds": round(time.time() - start, 1)}
            curve.append(row)
            print(json.dumps(row), flush=True)
    result = {"args": vars(args), "curve": curve, "test_accuracy": round(accuracy("test"), 4),
              "test_scenes": sum(len(b["labels"]) for b in splits["test"]), "minutes": round((time.time() - start) / 60, 2)}
    print(json.dumps({"test_accuracy": result["test_accuracy"]}), flush=True)
    if args.output:
        write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
