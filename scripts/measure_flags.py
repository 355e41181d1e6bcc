"""Measure the automatic warnings on the bundled encoder: zero-gradient shares of healthy heads,
metric checkpoints of short and long attacks, and the warnings' cost as a share of a cell's time.

    python scripts/measure_flags.py [--num_images 32] [--out flags_measure.json]

Heads are fitted here on cached features of 512 ShapesWorld scenes (a few seconds each; the
numbers are about the attacks, not the heads). One intra-op thread, so timings are comparable.
"""

import argparse
import contextlib
import json
import time

import torch

from hf_ssl_robust import evaluation
from hf_ssl_robust.attack_suites import build_attack
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.data.synthetic import render_scenes
from hf_ssl_robust.diagnostics import CellDiagnostics
from hf_ssl_robust.encoders import load_encoder
from hf_ssl_robust.heads import SSLForDepthEstimation, SSLForImageClassification, SSLForSemanticSegmentation
from hf_ssl_robust.tasks import get_task

HEADS = {"classification": (SSLForImageClassification, "labels", 1e-2), "segmentation": (SSLForSemanticSegmentation, "mask", 1e-2),
         "depth": (SSLForDepthEstimation, "depth", 1e-2)}


def fit_head(encoder, task, spec, scenes, epochs=30):
    cls, key, lr = HEADS[task]
    torch.manual_seed(0)  # the head's random init: the same numbers on every run
    model = cls.from_encoder(encoder, **get_task(task).head_kwargs(spec, 64)).eval()
    with torch.no_grad():
        feats = torch.cat([model.encode_features(scenes["pixel_values"][i : i + 64]) for i in range(0, 512, 64)])
    opt = torch.optim.Adam(list(model.head_parameters()), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, 512, 64):
            loss = model.forward_features(feats[i : i + 64], (64, 64), labels=scenes[key][i : i + 64]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def timed_eval(model, loader, task, spec, attacks, diagnostics=True, **kw):
    saved = evaluation.observe_steps, evaluation._clean, CellDiagnostics.update_batch, CellDiagnostics.finish
    if not diagnostics:  # the same evaluation with every check switched off
        evaluation.observe_steps = lambda observer: contextlib.nullcontext()
        evaluation._clean = lambda t, m, d: (lambda x, y: evaluation._predict(t, m, x))
        CellDiagnostics.update_batch = CellDiagnostics.finish = lambda *a, **k: None
    try:
        start = time.process_time()  # CPU time of this one-thread process: robust to other jobs on the machine
        out = evaluation.evaluate(model, loader, task, spec, attacks=attacks, **kw)
        return out, time.process_time() - start
    finally:
        evaluation.observe_steps, evaluation._clean, CellDiagnostics.update_batch, CellDiagnostics.finish = saved


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num_images", type=int, default=32)
    p.add_argument("--out", default="flags_measure.json")
    p.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "depth"])
    args = p.parse_args()
    torch.set_num_threads(1)
    encoder = load_encoder("shapes-resnet-tiny")
    train, test = render_scenes(512, 64, seed=1), render_scenes(args.num_images, 64, seed=2)
    report = {}
    for name in args.tasks:
        task, spec = get_task(name), get_dataset_spec("shapes", task=name)
        model = fit_head(encoder, name, spec, train)
        loader = [{"pixel_values": test["pixel_values"][i : i + 16], task.target_key: test[task.target_key][i : i + 16]}
                  for i in range(0, args.num_images, 16)]
        eps = 8 / 255
        make = lambda a, steps: build_attack(a, task, spec, eps=eps, step_size=eps / 4, steps=steps, seed=0)  # noqa: E731
        cell = {"embed": make("embed", 20), task.task_attack: make(task.task_attack, 20)}
        times = {False: [], True: []}
        for on in (False, True, False, True):  # the paper's cell (embed + task attack), interleaved, best of two
            out, seconds = timed_eval(model, loader, task, spec, cell, diagnostics=on)
            times[on].append(seconds)
            base = out if not on else base
        t_off, t_on = min(times[False]), min(times[True])
        full, _ = timed_eval(model, loader, task, spec, cell, worst_case=True)
        short, _ = timed_eval(model, loader, task, spec, {task.task_attack + "@2": make(task.task_attack, 2)})
        apgd_name = f"apgd:{ {'classification': 'ce', 'segmentation': 'masked_ce', 'depth': 'depth'}[name] }"
        long, _ = timed_eval(model, loader, task, spec, {apgd_name + "@100": make(apgd_name, 100)})
        report[name] = {"cpu_seconds_without_checks": round(t_off, 2), "cpu_seconds_with_checks": round(t_on, 2),
                        "cost_share": round((t_on - t_off) / t_off, 4),
                        "same_metrics": all(full[k][task.primary_metric] == base[k][task.primary_metric] for k in base),
                        **{k: {m: v[m] for m in (task.primary_metric, "flags", "checkpoints", "zero_gradient_share") if m in v}
                           for res in (full, short, long) for k, v in res.items()}}
        if name == "classification":  # the same head with its logits scaled by 1e4: a saturated softmax
            with torch.no_grad():
                model.classifier.weight.mul_(1e4)
                model.classifier.bias.mul_(1e4)
            scaled, _ = timed_eval(model, loader, task, spec, {"pgd": make("pgd", 20), "apgd:dlr": make("apgd:dlr", 20)})
            report[name]["logits_x1e4"] = {k: {m: v[m] for m in ("accuracy", "flags", "zero_gradient_share") if m in v} for k, v in scaled.items()}
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
