"""Copy a trained tiny encoder into the package (`hf_ssl_robust/assets/<name>/`) with its model card.

    python scripts/bundle_encoder.py outputs/embedded/shapes-resnet-tiny shapes-resnet-tiny
    python scripts/bundle_encoder.py outputs/embedded/shapes-resnet-tiny-deacl shapes-resnet-tiny-deacl \
        --results outputs/benchmark/results.json

Only what loading needs travels (`config.json`, `model.safetensors`) plus how it was made:
`training_args.json` of `hf_ssl_robust.pretraining` or `deacl_config.json` of `hf-ssl-robust deacl`.
An image processor (`preprocessor_config.json`, from the config: `hf_ssl_robust.processing`) is
written next to them, so that `transformers.pipeline("image-feature-extraction", model=folder)` works.
The card (README.md) is rendered from those files, never typed by
hand, so every figure in it was measured by the run that made the encoder.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hf_ssl_robust.encoders import ASSETS_DIR
from hf_ssl_robust.hub import render_encoder_card
from hf_ssl_robust.processing import save_image_processor

KEEP = ("config.json", "model.safetensors", "training_args.json", "deacl_config.json")
# pretrain_tiny.py arguments that only the ViT (DINO) recipe reads: left out of a ResNet card
VIT_ONLY = ("local_size", "num_local", "patch_size", "hidden_size", "layers", "heads", "out_dim", "teacher_temp", "student_temp",
            "momentum", "ibot_weight", "mask_ratio", "patch_init", "weight_decay_end")


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="encoder folder written by hf_ssl_robust.pretraining or hf-ssl-robust deacl")
    p.add_argument("name", help="bundled name, e.g. shapes-resnet-tiny")
    p.add_argument("--results", default=None, help="results.json of a benchmark, for the card's tables")
    p.add_argument("--dest", default=str(ASSETS_DIR), help="assets folder (default: the package's)")
    p.add_argument("--limitation", action="append", default=[], help="a bullet added first under Limitations (repeatable)")
    p.add_argument("--card_copy", default=None, help="also write the card here (e.g. model_cards/<name>.md)")
    args = p.parse_args(argv)

    src, dest = Path(args.source), Path(args.dest) / args.name
    if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
        raise SystemExit(f"{src} has no config.json + model.safetensors; train the encoder first.")
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    save_image_processor(dest)
    if (dest / "deacl_config.json").is_file():  # the teacher was a local folder: name it as bundled, drop local paths
        deacl = json.loads((dest / "deacl_config.json").read_text())
        if Path(str(deacl.get("encoder"))).is_dir():
            deacl["encoder"] = Path(deacl["encoder"]).name
        deacl.pop("output_dir", None)
        (dest / "deacl_config.json").write_text(json.dumps(deacl, indent=2))
    training = None
    if (dest / "training_args.json").is_file() and not (dest / "deacl_config.json").is_file():
        made = json.loads((dest / "training_args.json").read_text())
        made = {k: v for k, v in made.items() if k not in ("output_dir", "resume", "num_threads", "pool_cache")}  # local details
        if made.get("arch", "vit") == "resnet":
            made = {k: v for k, v in made.items() if k not in VIT_ONLY}
            recipe = ("InfoNCE (SimCLR-style) on the pooled token" + (" + dense InfoNCE on matched feature-map points"
                      if made.get("dense_weight", 0) > 0 else "") + ", between two renders of each ShapesWorld scene that share "
                      "its geometry and redraw its whole appearance (no labels, masks or depth enter; but the pairs are an oracle: "
                      "they share the generator's exact latent geometry, hence the same labels, masks and depth by "
                      "construction, privileged simulator knowledge that no photo collection offers)")
        else:
            recipe = "DINO self-distillation" + (" + iBOT masked-patch loss" if made.get("ibot_weight", 0) > 0 else "")
        training = {"recipe": f"{recipe} (hf_ssl_robust.pretraining)", **made}
    card = render_encoder_card(dest, args.results, repo_id=f"hf-ssl-robust/{args.name}", training=training, bundled_name=args.name)
    if args.limitation:  # a known weakness of this particular encoder, said up front
        card.text = card.text.replace("## Limitations\n\n", "## Limitations\n\n" + "".join(f"- {t}\n" for t in args.limitation), 1)
    card.save(dest / "README.md")
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    if args.card_copy:
        Path(args.card_copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dest / "README.md", args.card_copy)
    print(f"bundled {src} as {args.name} in {dest} ({size:.1f} MiB)")
    return dest


if __name__ == "__main__":
    main()
