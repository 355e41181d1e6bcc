"""Publishing: model cards rendered from saved configs and benchmark records, and Hub pushes.

A card is derived, never hand-written: `render_encoder_card` reads the encoder folder
(`config.json`, `model.safetensors`, `deacl_config.json` when DeACL made it) and a list of
benchmark records (`results.json`); `render_head_card` reads a head folder written by
`train_head` (`config.json`, `train_metrics.json`). Both return a `huggingface_hub.ModelCard`
whose YAML header carries the `model-index` (one `EvalResult` per task, dataset, attack and ε),
rendered from the Jinja templates in `hf_ssl_robust/templates/`.

`write_card` saves the card as `README.md` next to the weights (review it before pushing);
`push_encoder` / `push_head` write it, add the image processor (`preprocessor_config.json`, which
`transformers.pipeline` needs) to folders saved without one, and upload the folder.
`card.validate()` calls the Hub, so it only runs inside a push.

Library name in the metadata: `transformers` for both. Encoders are plain `transformers` models; heads
carry their own code (`modeling_ssl_heads.py`, `auto_map`), so `transformers` loads them with
`trust_remote_code=True`, and `import hf_ssl_robust` registers the same classes. Cards give the install
line and the source URL (`SOURCE_URL`, the `Repository` of `[project.urls]` in pyproject.toml).

Example:
    >>> write_card("outputs/deacl-dinov2-small", "outputs/bench/results.json", repo_id="me/dinov2-small-deacl")
    >>> push_encoder("outputs/deacl-dinov2-small", "me/dinov2-small-deacl", records="outputs/bench/results.json")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from .heads.lean import REMOTE_FILE, ensure_remote_code
from .processing import ensure_image_processor, image_processor_for
from .results import TASK_TABLES, attack_title, display_name, format_eps, load_records, markdown_tables

TEMPLATES_DIR = Path(__file__).parent / "templates"
LIBRARY_NAME = "hf-ssl-robust"  # the pip name, as the cards' text names the package
SOURCE_URL = "https://github.com/hf-ssl-robust/hf_ssl_robust"  # = [project.urls] Repository (a test checks)
INSTALL_LINE = f'`pip install "{LIBRARY_NAME} @ git+{SOURCE_URL}"` (not on PyPI yet)'
TAGS = ["self-supervised", "adversarial-robustness", "deacl", "hf-ssl-robust", "vision"]
HEAD_TAGS = ["self-supervised", "adversarial-robustness", "linear-probe", "hf-ssl-robust", "vision"]
TASK_TYPES = {"classification": "image-classification", "segmentation": "image-segmentation", "depth": "depth-estimation"}
TASK_NAMES = {
    "classification": "Linear classification on a frozen encoder",
    "segmentation": "Linear semantic segmentation on a frozen encoder",
    "depth": "Linear monocular depth estimation on a frozen encoder",
}
HEAD_AUTO_CLASSES = {
    "classification": "AutoModelForImageClassification",
    "segmentation": "AutoModelForSemanticSegmentation",
    "depth": "AutoModelForDepthEstimation",
}
# Short family names for cards, per `model_type` (encoders.FAMILIES has the long ones).
FAMILIES = {"dinov2": "DINOv2", "dinov2_with_registers": "DINOv2 with registers", "vit": "ViT (DINO v1)", "resnet": "ResNet",
            "dinov3_vit": "DINOv3 ViT", "dinov3_convnext": "DINOv3 ConvNeXt", "clip_vision_model": "CLIP vision",
            "clip": "CLIP (vision tower)", "siglip_vision_model": "SigLIP vision", "siglip": "SigLIP (vision tower)"}
# Never uploaded: resumable training state, logs, temporary files.
IGNORE_PATTERNS = ["checkpoints/**", "*.tmp", "log.jsonl", "*.log", "logs/**", "runs/**", "wandb/**", "__pycache__/**"]
LOGIN_HINT = "Log in with `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set the HF_TOKEN environment variable."
DEFAULT_LICENSE = "apache-2.0"
# Where the code lives (pyproject.toml's [project.urls] Repository; a test keeps the two equal). Placeholder
# until the project's public repository exists.
SOURCE_URL = "https://github.com/hf-ssl-robust/hf_ssl_robust"


class HubPushError(OSError):
    """A push to the Hub failed (offline, not logged in, no rights on the repo, ...)."""


# --- reading folders -------------------------------------------------------------------------------
def check_folder(folder: str | os.PathLike) -> Path:
    """The folder as a Path, after checking that it holds a saved model.

    Raises:
        ValueError: not a folder, or `config.json` / `model.safetensors` missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder; pass the output_dir of save_pretrained / train_deacl / train_head.")
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if "model.safetensors" in missing and (folder / "model.safetensors.index.json").is_file():
        missing.remove("model.safetensors")  # sharded weights
    if missing:
        raise ValueError(
            f"{str(folder)!r} lacks {' and '.join(missing)}: it is not a saved model (DeACL only saves the encoder "
            "when the run finishes; a run stopped early holds checkpoints only)."
        )
    return folder


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def count_parameters(folder: Path) -> int | None:
    """Parameters in `model.safetensors`, from its header alone (no tensor is loaded)."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _hub_id(name: str | None) -> str | None:
    """`name` as a Hub model id (presets resolved), or None for local folders and bundled names."""
    if not name:
        return None
    from .encoders import PRESETS

    name = PRESETS.get(name, name)
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or Path(name).expanduser().exists() or name.startswith((".", "~", "/")):
        return None
    return name


def _dataset_info(name: str, task: str | None = None) -> dict[str, Any]:
    """Hub id (or the registry name), split and whether it is synthetic, for a registry dataset."""
    from .data import get_dataset_spec

    try:
        spec = get_dataset_spec(name, task=task)
    except ValueError:
        return {"type": name, "split": None, "hub": False, "synthetic": False}
    return {"type": spec.hub_id or name, "split": spec.eval_split, "hub": spec.hub_id is not None,
            "synthetic": spec.source == "synthetic"}  # fmt: skip


def _as_records(records: Sequence[dict] | str | os.PathLike | None, folder: Path | None) -> list[dict]:
    if records is None:
        found = folder / "results.json" if folder is not None else None
        return load_records(found) if found is not None and found.is_file() else []
    if isinstance(records, (str, os.PathLike)):
        return load_records(records)
    return list(records)


def _own_records(records: list[dict], names: set[str]) -> list[dict]:
    """The records of this model: all of them when they name one encoder, else those whose
    encoder matches one of `names` (path, folder name, repo id or its last part)."""
    if len({r["encoder"] for r in records}) <= 1:
        return records
    short = {display_name(n) for n in names if n}
    return [r for r in records if r["encoder"] in names or display_name(r["encoder"]) in short]


# --- eval results ------------------------------------------------------------------------------------
def metric_label(metric: str, attack: str, eps: float, steps: int | None) -> str:
    """`accuracy (clean)` or `accuracy (EmbedAttack, ε=8/255, 20 steps)`."""
    if attack == "none":
        return f"{metric} (clean)"
    return f"{metric} ({attack_title(attack)}, ε={format_eps(float(eps))}" + (f", {steps} steps)" if steps else ")")


def eval_results_from_records(records: Sequence[dict]) -> list[EvalResult]:
    """One `EvalResult` per (task, dataset, attack, ε) primary-metric record (the last one wins).

    The primary metric is the paper's: accuracy, mean_iou or rmse. NaN values are left out. A
    record's automatic warnings (`flags`, see `diagnostics.FLAGS`) go into the metric's name and args.
    """
    primary = {task: metric for task, (_, metric) in TASK_TABLES.items()}
    chosen: dict[tuple, dict] = {}
    for r in records:
        if primary.get(r["task"]) == r["metric"] and isinstance(r["value"], (int, float)) and math.isfinite(r["value"]):
            chosen[(r["task"], r["dataset"], r["attack"], round(float(r["eps"]), 9))] = r
    results = []
    for (task, dataset, attack, eps), r in chosen.items():
        info = _dataset_info(dataset, task)
        steps = int(r["steps"]) if r.get("steps") else None
        results.append(EvalResult(
            task_type=TASK_TYPES.get(task, task), task_name=TASK_NAMES.get(task, task),
            dataset_type=info["type"], dataset_name=dataset, dataset_split=info["split"],
            metric_type=r["metric"], metric_value=round(float(r["value"]), 6),
            metric_name=metric_label(r["metric"], attack, eps, steps) + (f" [warning: {', '.join(r['flags'])}]" if r.get("flags") else ""),
            metric_args={"attack": attack, "eps": format_eps(eps), "steps": steps or 0, "num_samples": int(r["num_samples"]),
                         **({"flags": ", ".join(r["flags"])} if r.get("flags") else {})},
        ))  # fmt: skip
    return results


# --- encoder cards -----------------------------------------------------------------------------------
def _training_rows(cfg: dict) -> list[tuple[str, str]]:
    """The resolved DeACL config as (setting, value) rows, in the order a reader needs them."""
    g = cfg.get
    eps = float(g("eps", 0))
    step = g("attack_step_size")
    rows = [
        ("Teacher (frozen)", f"`{g('encoder')}`"),
        ("Student", "initialised from the teacher; all weights trained"),
        ("Loss", f"(1 − cos(f_R(x), f(x))) + γ·(1 − cos(f_R(x_adv), f_R(x))), γ = {g('gamma')}, on the CLS token"
         + (f"; plus the same terms on patch tokens × {g('dense_weight')}" if g("objective") == "dense" else "")),
        ("Objective", f"`{g('objective')}`"),
        ("Threat model", f"L∞, ε = {format_eps(eps)} (pixels in [0, 1])"),
        ("Inner attack", f"{g('attack_steps')} PGD steps of {format_eps(float(step)) if step is not None else 'ε/4'}, "
         f"maximising 1 − cos(f_R(x_adv), f(x)) on the CLS token"
         + (f" plus {g('dense_weight')} × its mean over patch tokens" if g("objective") == "dense" else "")
         + f", generated on the {g('attack_on')}"),
        ("Optimiser", f"SGD, lr {g('lr')}, momentum {g('momentum')}, weight decay {g('weight_decay')}"),
    ]
    if g("total_steps") is not None:
        rows.append(("Schedule", f"linear warm-up for {g('warmup_steps')} steps, then cosine decay to 0 (per step)"))
        rows.append(("Steps", f"{g('total_steps')} ({g('steps_per_epoch')} per epoch)"))
    else:
        rows.append(("Schedule", f"{g('warmup_epochs')} warm-up epochs, then cosine decay"))
        rows.append(("Steps", f"{g('max_steps')}" if g("max_steps") else f"{g('epochs')} epochs"))
    data = f"images of folder `{g('image_folder')}`" if g("image_folder") else f"`{g('dataset')}` (labels unused)"
    if g("num_train_images") is not None:
        data += f", {g('num_train_images')} images"
    rows.append(("Data", data + (f" at {g('image_size')}×{g('image_size')}" if g("image_size") else "")))
    rows.append(("Augmentation", f"random resized crops (area ≥ {g('min_crop_scale')}), horizontal and vertical flips"
                 if g("augment") else "none"))
    batch = f"{g('batch_size')} (global)" + (f" over {g('num_processes')} processes" if g("num_processes") else "")
    rows += [("Batch size", batch), ("Mixed precision", str(g("mixed_precision"))), ("Seed", str(g("seed")))]
    return [(k, v) for k, v in rows if "None" not in v]


def _conv_stride(config: dict) -> int | None:
    """Total stride of a convolutional family's config (the pixels per output token), else None."""
    from .families import FAMILIES as REGISTERED
    from .families import token_stride

    family = REGISTERED.get(config.get("model_type"))
    return token_stride(config) if family is not None and family.pad else None


def _encoder_facts(folder: Path | None, config: dict | None) -> dict[str, Any]:
    config = config or {}
    size = count_parameters(folder) if folder is not None else None
    return {
        "family": FAMILIES.get(config.get("model_type"), config.get("model_type")),
        "model_type": config.get("model_type"),
        "architecture": (config.get("architectures") or ["AutoModel"])[0],
        "hidden_size": config.get("hidden_size"), "num_layers": config.get("num_hidden_layers"),
        "num_heads": config.get("num_attention_heads"), "patch_size": config.get("patch_size"),
        "image_size": config.get("image_size"), "registers": config.get("num_register_tokens"),
        "stages": ", ".join(f"{d} × {w}" for d, w in zip(config["depths"], config["hidden_sizes"])) if config.get("hidden_sizes") else None,
        "stride": _conv_stride(config), "layer_type": config.get("layer_type"),
        "num_parameters": f"{size / 1e6:.2f}M" if size and size >= 1e5 else (f"{size:,}" if size else None),
        "processor": _processor_facts(config),
    }  # fmt: skip


def _processor_facts(config: dict) -> dict[str, Any] | None:
    """Input side, mean and std of the encoder's image processor (`processing.image_processor_for`),
    or None when the config is missing or of an unsupported family."""
    from transformers import AutoConfig

    if not config.get("model_type"):
        return None
    fields = {k: v for k, v in config.items() if k != "model_type"}
    try:
        processor = image_processor_for(AutoConfig.for_model(config["model_type"], **fields))
    except (ValueError, TypeError):
        return None
    return {"side": processor.size.height, "mean": _floats(processor.image_mean), "std": _floats(processor.image_std)}


def _floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def render_encoder_card(
    folder_or_config: str | os.PathLike | dict | Any,
    records: Sequence[dict] | str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    training: dict | Any | None = None,
    license: str = DEFAULT_LICENSE,
    results_dataset: str | None = None,
    bundled_name: str | None = None,
):
    """Model card of a (robust) encoder.

    Args:
        folder_or_config: the encoder folder (reads `config.json`, `model.safetensors` and, when
            DeACL made it, `deacl_config.json`; `results.json` there is used when `records` is
            None), or a DeACL config (`DeACLConfig` or its dict) when there is no folder yet.
        records: benchmark records (a list or a `results.json` path). All of them go into the
            tables (comparisons welcome); `model-index` gets the records of this encoder only.
        repo_id: where the card will live (`user/name`); names the model and the loading code.
        base_model: the encoder it started from; default: DeACL's teacher when it is a Hub id.
        training: how it was trained, overriding `deacl_config.json`: a DeACL config, or a dict
            `{setting: value}` shown as is (for encoders not made by DeACL).
        license: SPDX id for the metadata.
        results_dataset: the Hub dataset (`hf-ssl-robust results push`) holding these results with
            their provenance; the card links it.
        bundled_name: the encoder ships inside the package under this name: the card says so and shows how
            to load that copy today (`repo_id` is then the id it will have once published).

    Returns:
        A `huggingface_hub.ModelCard`; `card.save(path)` writes it, `card.data.to_dict()` is its YAML.
    """
    _check_dataset_id(results_dataset)
    folder, config, deacl = None, None, None
    if isinstance(folder_or_config, (str, os.PathLike)):
        folder = check_folder(folder_or_config)
        config = _read_json(folder / "config.json")
        deacl = _read_json(folder / "deacl_config.json")
    else:
        deacl = _config_dict(folder_or_config)
    rows, free_training = None, None
    if training is not None:
        if isinstance(training, dict) and "gamma" not in training:
            free_training, deacl = [(str(k), str(v)) for k, v in training.items()], None
        else:
            deacl = _config_dict(training)
    if deacl is not None:
        rows = _training_rows(deacl)
    base_model = base_model or _hub_id((deacl or {}).get("encoder"))

    all_records = _as_records(records, folder)
    names = {repo_id, str(folder) if folder else None, folder.name if folder else None} - {None}
    mine = _own_records(all_records, names)
    model_name = (repo_id or (folder.name if folder else None) or "encoder").split("/")[-1]
    eval_results = eval_results_from_records(mine) or None
    # In the tables, this encoder's rows carry the name it is published under.
    table_records = [dict(r, encoder=repo_id) if repo_id and any(r is m for m in mine) else r for r in all_records]
    datasets = _metadata_datasets([(deacl or {}).get("dataset")] if deacl and not deacl.get("image_folder") else [], all_records)
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-feature-extraction",
        tags=[t for t in TAGS if deacl is not None or t != "deacl"],
        base_model=base_model, datasets=datasets or None, model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )  # fmt: skip
    synthetic = bool(deacl and not deacl.get("image_folder") and _dataset_info(deacl.get("dataset", ""))["synthetic"])
    synthetic = synthetic or (bool(all_records) and all(_dataset_info(r["dataset"])["synthetic"] for r in all_records))
    eps = float(deacl["eps"]) if deacl and deacl.get("eps") is not None else None
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATES_DIR / "encoder_card.md"),
        model_name=model_name, repo_id=repo_id or "path/to/" + model_name,
        base_model_id=base_model, teacher=(deacl or {}).get("encoder"), facts=_encoder_facts(folder, config),
        deacl=deacl is not None, training_rows=rows, free_training=free_training,
        train_eps=format_eps(eps) if eps is not None else None, synthetic=synthetic,
        tables=markdown_tables(table_records).strip() if table_records else None,
        eval_note=_eval_note(all_records),
        encoders_in_tables=sorted({display_name(r["encoder"]) for r in table_records if r["encoder"] != "prior"}),
        results_dataset=results_dataset, install_line=INSTALL_LINE, bundled_name=bundled_name, source_url=SOURCE_URL,
    )  # fmt: skip


def _check_dataset_id(repo_id: str | None) -> None:
    if repo_id is not None and (repo_id.count("/") != 1 or not all(repo_id.split("/"))):
        raise ValueError(f"results_dataset must be a Hub dataset id 'user_or_org/name', got {repo_id!r}.")


def _config_dict(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return dict(cfg)
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    raise TypeError(f"Expected a folder, a DeACLConfig or a dict, got {type(cfg).__name__}.")


def _metadata_datasets(names: Sequence[str | None], records: Sequence[dict]) -> list[str]:
    """Hub dataset ids only (synthetic or local datasets have no id to link)."""
    ids: dict[str, None] = {}
    for name in [*names, *(r["dataset"] for r in records)]:
        if name:
            info = _dataset_info(name)
            if info["hub"]:
                ids.setdefault(info["type"], None)
    return list(ids)


def _eval_note(records: Sequence[dict]) -> str | None:
    if not records:
        return None
    n = sorted({int(r["num_samples"]) for r in records})
    steps = sorted({int(r["steps"]) for r in records if r["attack"] != "none" and r.get("steps")})
    note = f"Evaluated on {', '.join(map(str, n))} images per cell"
    note += f"; attacks ran {', '.join(map(str, steps))} steps." if steps else "."
    flagged = sorted({f for r in records for f in r.get("flags") or []})
    if flagged:
        note += (f" Some numbers carry automatic warnings ({', '.join(flagged)}): they may overstate robustness;"
                 " see the legend under the tables.")
    return note


# --- head cards --------------------------------------------------------------------------------------
def render_head_card(
    folder: str | os.PathLike,
    records: Sequence[dict] | str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    results_dataset: str | None = None,
):
    """Model card of a task head saved by `train_head` (`config.json` + `train_metrics.json`).

    The clean metrics of `train_metrics.json` go into `model-index`; `records` (optional) adds
    robustness tables, and their records for this head's task and dataset join `model-index`;
    `results_dataset` (a Hub dataset id from `hf-ssl-robust results push`) is linked.
    """
    _check_dataset_id(results_dataset)
    folder = check_folder(folder)
    config = _read_json(folder / "config.json") or {}
    info = _read_json(folder / "train_metrics.json")
    if info is None:
        raise ValueError(f"{str(folder)!r} lacks train_metrics.json: is it a head saved by train_head?")
    task, dataset = info["task"], info["dataset"]
    encoder = info.get("encoder") or config.get("encoder_name_or_path")
    primary = TASK_TABLES.get(task, ("", None))[1]
    clean = [
        dict(encoder=encoder, task=task, dataset=dataset, attack="none", eps=0.0, steps=0, metric=m, value=v,
             num_samples=int(info["metrics"].get("num_samples", 0)))
        for m, v in info["metrics"].items() if m == primary and isinstance(v, (int, float))
    ]  # fmt: skip
    extra = [r for r in _as_records(records, folder) if r["task"] == task]
    attacked = [r for r in _own_records(extra, {encoder}) if r["dataset"] == dataset and r["attack"] != "none"]
    model_name = (repo_id or folder.name).split("/")[-1]
    eval_results = eval_results_from_records(clean + attacked) or None
    base = _hub_id(encoder)
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag=TASK_TYPES.get(task), tags=[*HEAD_TAGS, task],
        base_model=base, datasets=_metadata_datasets([dataset], []) or None,
        model_name=model_name if eval_results else None, eval_results=eval_results,
    )  # fmt: skip
    enc_cfg = config.get("encoder_config") or {}
    hp = info.get("hyperparameters", {})
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATES_DIR / "head_card.md"),
        model_name=model_name, repo_id=repo_id or "path/to/" + model_name,
        task=task, task_name=TASK_NAMES.get(task, task), auto_class=HEAD_AUTO_CLASSES.get(task, "AutoModel"),
        pipeline_task=TASK_TYPES.get(task), library_name=LIBRARY_NAME,
        head_class=(config.get("architectures") or [""])[0], encoder=encoder, base_model_id=base,
        encoder_family=FAMILIES.get(enc_cfg.get("model_type"), enc_cfg.get("model_type") or "self-supervised"),
        dataset=dataset, eval_split=info.get("eval_split"), num_labels=len(config.get("id2label") or {}) or None,
        image_size=info.get("image_size") or config.get("image_size"),
        hp_rows=[(k, str(v)) for k, v in hp.items()] + [
            ("training images", str(info.get("num_train"))), ("validation images (carved from train)", str(info.get("num_val"))),
            ("best epoch (on validation)", _best_epoch(info, hp)), ("features cached", str(info.get("feature_cache"))),
        ],
        lr_searched=", ".join(f"{a['lr']:g}" + (" (diverged)" if a.get("diverged") else "") for a in info.get("lr_search", []))
        if len(info.get("lr_search", [])) > 1 else None,
        metric_rows=[(k, _fmt_value(v)) for k, v in info["metrics"].items() if k != "num_samples" and not isinstance(v, (list, dict))],
        num_eval=info["metrics"].get("num_samples"), synthetic=_dataset_info(dataset)["synthetic"],
        tables=markdown_tables(extra).strip() if extra else None, results_dataset=results_dataset,
        encoder_reference=config.get("encoder_reference"), remote_file=REMOTE_FILE, install_line=INSTALL_LINE,
        source_url=SOURCE_URL,
    )  # fmt: skip


def _best_epoch(info: dict, hp: dict) -> str:
    """1-based, as `hf-ssl-robust train-head` prints it (`train_metrics.json` keeps the 0-based index)."""
    best = info.get("best_epoch")
    if best is None:
        return "None"
    return f"{int(best) + 1} of {hp['epochs']}" if hp.get("epochs") else str(int(best) + 1)


def _fmt_value(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# --- saving and pushing -----------------------------------------------------------------------------
def _is_head(folder: Path) -> bool:
    return (folder / "train_metrics.json").is_file()


def write_card(
    folder: str | os.PathLike,
    records: Sequence[dict] | str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    overwrite: bool = True,
    **card_kwargs: Any,
) -> Path:
    """Render the card of the model in `folder` (encoder or head) and save it as `folder/README.md`.

    Returns the README path. With `overwrite=False` an existing README is kept as is.
    """
    folder = check_folder(folder)
    path = folder / "README.md"
    if path.exists() and not overwrite:
        return path
    if _is_head(folder):
        card = render_head_card(folder, records, repo_id=repo_id, **card_kwargs)
    else:
        card = render_encoder_card(folder, records, repo_id=repo_id, **card_kwargs)
    card.save(path)
    return path


def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def _push(folder, repo_id, records, private, token, commit_message, overwrite_card, validate_card, card_kwargs) -> str:
    folder = check_folder(folder)
    if "/" not in repo_id.strip("/"):
        raise ValueError(f"repo_id must be 'user_or_org/name', got {repo_id!r}.")
    write_card(folder, records, repo_id=repo_id, overwrite=overwrite_card, **card_kwargs)
    ensure_image_processor(folder)  # folders saved before heads wrote one: the cards' pipeline snippets need it
    if _offline():
        raise HubPushError(f"Cannot push to {repo_id!r}: HF_HUB_OFFLINE is set. The card is saved at {folder / 'README.md'}; "
                           f"unset HF_HUB_OFFLINE on a machine with network, then push again. {LOGIN_HINT}")  # fmt: skip
    errors: tuple[type[BaseException], ...] = (HfHubHTTPError, LocalTokenNotFoundError, OSError)
    try:
        import httpx

        errors += (httpx.HTTPError,)
    except ImportError:
        pass
    api = HfApi(token=token)
    try:
        if validate_card:
            ModelCard.load(folder / "README.md").validate()  # asks the Hub to check the metadata
    except ValueError as err:
        raise HubPushError(f"The Hub rejected the card {folder / 'README.md'}: {err}") from err
    except errors as err:
        raise HubPushError(f"Could not reach the Hub to check the card of {str(folder)!r} ({type(err).__name__}: {err}).") from err
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 ignore_patterns=list(IGNORE_PATTERNS))  # fmt: skip
    except errors as err:
        raise HubPushError(f"Pushing {str(folder)!r} to {repo_id!r} failed ({type(err).__name__}: {err}). {LOGIN_HINT} "
                           "Check also that the token can write to that user or organisation.") from err  # fmt: skip
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"


def push_encoder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    records: Sequence[dict] | str | os.PathLike | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload robust encoder (hf-ssl-robust)",
    overwrite_card: bool = True,
    validate_card: bool = True,
    **card_kwargs: Any,
) -> str:
    """Write the encoder's card to `folder/README.md` and upload the folder to `repo_id`.

    Checkpoints, logs and temporary files are not uploaded (`IGNORE_PATTERNS`); a folder without
    `preprocessor_config.json` gets one first (`processing.ensure_image_processor`). With
    `overwrite_card=False` an existing README.md (e.g. one edited after `write_card`) is kept;
    `validate_card` has the Hub check the card's metadata first. `card_kwargs` go to
    `render_encoder_card` (`base_model`, `training`, `license`).

    Returns:
        The URL of the commit (or of the repo).

    Raises:
        ValueError: `folder` lacks `config.json` or `model.safetensors`; a bad `repo_id`.
        HubPushError: offline (`HF_HUB_OFFLINE=1`, raised at once), not logged in, no network or
            no rights; the Hub's own error is its `__cause__`.
    """
    return _push(folder, repo_id, records, private, token, commit_message, overwrite_card, validate_card, card_kwargs)


def push_head(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    records: Sequence[dict] | str | os.PathLike | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload task head (hf-ssl-robust)",
    overwrite_card: bool = True,
    validate_card: bool = True,
    **card_kwargs: Any,
) -> str:
    """`push_encoder` for a head saved by `train_head` (its card comes from `render_head_card`)."""
    if not _is_head(Path(folder)):
        raise ValueError(f"{str(folder)!r} lacks train_metrics.json: push_head takes a folder written by train_head.")
    reference = (_read_json(Path(folder) / "config.json") or {}).get("encoder_reference") or {}
    if reference.get("kind") == "local":
        raise ValueError(
            f"{str(folder)!r} is a lean head whose encoder is the local folder {reference.get('source')!r}, which nobody "
            "who downloads it has. Push the encoder first (`push_encoder`) and train the head on its Hub id, or make the "
            "head self-contained: `HEADS[task].from_pretrained(folder).save_pretrained(folder, embed_encoder=True)` "
            "(or train it with --embed_encoder)."
        )
    ensure_remote_code(folder)  # folders saved before heads carried it: the card's trust_remote_code snippet needs it
    return _push(folder, repo_id, records, private, token, commit_message, overwrite_card, validate_card, card_kwargs)
