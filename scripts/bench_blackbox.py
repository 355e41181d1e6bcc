"""Square vs the paper's white-box attack on the bundled encoder: the `black_box_stronger` check and its cost.

For one task's ShapesWorld cell: the head (trained or loaded as the benchmark does), `--num_images`
evaluation images, at each ε the task attack (PGD-20 / SegPGD-20 / DepthPGD-20) and Square with
`--queries`, on the head as trained and on the same head with its logits scaled by 1e4 (softmax
saturated: the white-box gradient is exactly 0). Prints per row the mean damage (error rate /
pixel error rate / RMSE) of each attack, the images on which Square is stronger, the flag, and the
wall time and forward passes per image of both attacks.

    nice -n 10 python scripts/bench_blackbox.py --task classification --num_images 32 --queries 200 --eps 4/255 8/255
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from hf_ssl_robust.attack_suites import build_attack  # noqa: E402
from hf_ssl_robust.benchmark import BenchmarkConfig, _head  # noqa: E402
from hf_ssl_robust.data import make_dataset  # noqa: E402
from hf_ssl_robust.data.loading import collate  # noqa: E402
from hf_ssl_robust.diagnostics_blackbox import black_box_stronger, prediction_damage  # noqa: E402
from hf_ssl_robust.encoders import bundled_encoders, load_encoder  # noqa: E402
from hf_ssl_robust.results import parse_eps  # noqa: E402
from hf_ssl_robust.tasks import get_task  # noqa: E402


class ScaledLogits(torch.nn.Module):
    """The head with its logits multiplied by `scale` (depth heads are returned as they are)."""

    def __init__(self, head, scale: float) -> None:
        super().__init__()
        self.head, self.scale = head, scale

    def forward(self, pixel_values):
        out = self.head(pixel_values=pixel_values)
        return out.logits * self.scale if getattr(out, "logits", None) is not None else out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default=None, help="default: the bundled standard encoder")
    p.add_argument("--task", default="classification", choices=["classification", "segmentation", "depth"])
    p.add_argument("--eps", nargs="+", default=["4/255", "8/255"])
    p.add_argument("--num_images", type=int, default=32)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--steps", type=int, default=20, help="white-box attack steps")
    p.add_argument("--output_dir", default="outputs/blackbox", help="where heads are trained / cached")
    args = p.parse_args(argv)
    name = args.encoder or next(iter(bundled_encoders().values()))
    cfg = BenchmarkConfig(encoders=[name], tasks=[args.task], datasets=["shapes"], output_dir=args.output_dir, attacks=["embed"])
    head, spec = _head(cfg, load_encoder(name), name, args.task, "shapes", Accelerator(cpu=not torch.cuda.is_available()))
    task = get_task(args.task)
    data = make_dataset(spec, "eval", num_samples=args.num_images, seed=0)
    batch = collate([data[i] for i in range(min(args.num_images, len(data)))])
    x, y = batch["pixel_values"], batch[task.target_key]
    n, max_depth = len(x), float(spec.max_depth or 10.0)
    forwards = {"n": 0}
    head.encoder.register_forward_hook(lambda m, i, o: forwards.__setitem__("n", forwards["n"] + i[0].shape[0]))
    rows = []
    for scale in ([1.0] if args.task == "depth" else [1.0, 1e4]):
        model = ScaledLogits(head, scale).eval()
        for eps in [float(parse_eps(e)) for e in args.eps]:
            attack = build_attack(task.task_attack, task, spec, eps=eps, step_size=cfg.attack_step_size(eps), steps=args.steps, seed=0)
            forwards["n"], start = 0, time.perf_counter()
            adv = attack.perturb(model, x, y).pixels
            t_white, f_white = time.perf_counter() - start, forwards["n"] / n
            with torch.no_grad():
                white = prediction_damage(args.task, task.predict(head(pixel_values=adv)), y, spec.ignore_index, max_depth)
                clean = prediction_damage(args.task, task.predict(head(pixel_values=x)), y, spec.ignore_index, max_depth)
            forwards["n"], start = 0, time.perf_counter()
            check = black_box_stronger(model, args.task, x, y, white, eps=eps, queries=args.queries, seeds=list(range(n)),
                                       ignore_index=spec.ignore_index, max_depth=max_depth)
            t_square, f_square = time.perf_counter() - start, forwards["n"] / n
            row = dict(task=args.task, scale=scale, eps=eps, images=n, clean=float(clean.nanmean()), white=float(white.nanmean()),
                       square=float(check.square_damage.nanmean()), stronger=int(check.stronger.sum()), flagged=check.flagged,
                       white_ms=1000 * t_white / n, white_passes=f_white, square_ms=1000 * t_square / n, square_passes=f_square)
            rows.append(row)
            print(f"{args.task} logits x{scale:g} eps {eps * 255:.0f}/255: clean {row['clean']:.3f}, {task.task_attack}-{args.steps} "
                  f"{row['white']:.3f}, Square-{args.queries} {row['square']:.3f}; Square stronger on {row['stronger']}/{n} -> "
                  f"flag {check.flagged}; {row['white_ms']:.0f} ms/img ({f_white:.0f} fwd+bwd) vs {row['square_ms']:.0f} ms/img "
                  f"({f_square:.0f} fwd) = {t_square / t_white:.1f}x", flush=True)
    return rows


if __name__ == "__main__":
    main()
