"""Results as a dataset: benchmark runs to Parquet records with provenance, a dataset card, and back.

    >>> rows = run_records("outputs/benchmark")                 # results.json + run_info.json, validated
    >>> write_results_dataset(rows, "outputs/results-dataset")   # data/results.parquet + README.md
    >>> push_results("outputs/benchmark", "me/dino-robustness")  # the same files, as a Hub dataset repo
    >>> rows = read_source("me/dino-robustness")                 # a run folder, a results dataset or a Hub id

One row per measured number (every field of `results.json`), plus the provenance of its run:
package version and git revision, torch / transformers versions, device and process count, the
encoder's id and fingerprint (Hub commit or weights hash), dataset id and split, threat model
(norm, ε), protocol (steps, step size, restarts, evaluated images, image size, seed) and flags.
Runs made before records carried `encoder_id` / `encoder_fingerprint` get them derived here with
`identity.encoder_identity`, when the encoder resolves on this machine (bundled names do); else the
run is refused, as is any record with missing provenance, an unknown metric or an out-of-range value.
A run folder of `scripts/bench_strength.py` (`strength.json`) is read too.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, snapshot_download

from .identity import portable_encoder_id
from .results import TASK_TABLES, format_eps

PARQUET_PATH = "data/results.parquet"
HIGHER_IS_BETTER = {"accuracy": True, "mean_iou": True, "overall_accuracy": True, "mean_accuracy": True,
                    "delta1": True, "delta2": True, "delta3": True,
                    "rmse": False, "abs_rel": False, "sq_rel": False, "rmse_log": False, "log10": False}
TASK_METRICS = {"classification": {"accuracy"}, "segmentation": {"mean_iou", "overall_accuracy", "mean_accuracy"},
                "depth": {"rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3"}}
PRIMARY_METRIC = {task: metric for task, (_, metric) in TASK_TABLES.items()}
# Fixed column order and types, so that files from different runs stack into one table.
SCHEMA = pa.schema([
    ("encoder", pa.string()), ("encoder_id", pa.string()), ("encoder_fingerprint", pa.string()),
    ("encoder_revision", pa.string()), ("encoder_weights_sha256", pa.string()), ("encoder_family", pa.string()),
    ("encoder_card", pa.string()), ("identity_derived", pa.bool_()),
    ("task", pa.string()), ("dataset", pa.string()), ("dataset_id", pa.string()), ("dataset_split", pa.string()),
    ("attack", pa.string()), ("norm", pa.string()), ("eps", pa.float64()), ("steps", pa.int64()), ("step_size", pa.float64()),
    ("restarts", pa.int64()), ("track_best", pa.bool_()), ("num_samples", pa.int64()), ("image_size", pa.int64()),
    ("seed", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("flags", pa.list_(pa.string())),
    ("seconds", pa.float64()), ("package_version", pa.string()), ("git_revision", pa.string()),
    ("torch_version", pa.string()), ("transformers_version", pa.string()), ("device", pa.string()),
    ("num_processes", pa.int64()), ("mixed_precision", pa.string()), ("run", pa.string()), ("command", pa.string()),
    ("extra", pa.string()),
])  # fmt: skip
COLUMNS = SCHEMA.names
# Without these a number cannot be placed on a board, compared or reproduced.
REQUIRED = ("encoder", "encoder_id", "encoder_fingerprint", "task", "dataset", "attack", "norm", "eps", "steps",
            "num_samples", "metric", "seed")
_ATTACK_NAME = re.compile(r"^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


# --- run folders to rows ---------------------------------------------------------------------------
def run_records(run_dir: str | os.PathLike) -> list[dict]:
    """The validated rows of a benchmark run folder (`results.json` + `run_info.json`) or of a
    `bench_strength.py` folder (`strength.json`).

    Raises:
        ValueError: not such a folder; provenance missing (no `run_info.json`, an encoder that does
            not resolve here and has no recorded identity); a record that fails `validate_rows`.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name in ("results.json", "strength.json"):
        run_dir = run_dir.parent
    if (run_dir / "results.json").is_file():
        rows = _benchmark_rows(run_dir)
    elif (run_dir / "strength.json").is_file():
        rows = _strength_rows(run_dir)
    else:
        raise ValueError(f"{str(run_dir)!r} holds no results.json (from `hf-ssl-robust benchmark`) nor strength.json "
                         "(from scripts/bench_strength.py): pass the run's output_dir.")  # fmt: skip
    return dedupe(validate_rows(rows, str(run_dir)))


def _benchmark_rows(run_dir: Path) -> list[dict]:
    from .results import load_records

    records = load_records(run_dir / "results.json")
    info_path = run_dir / "run_info.json"
    if not info_path.is_file():
        raise ValueError(f"{str(run_dir)!r} lacks run_info.json, the run's provenance (versions, git revision, seed, "
                         "protocol): results.json alone cannot be shared; re-run the benchmark to write it.")  # fmt: skip
    info = json.loads(info_path.read_text())
    cfg = info.get("config") or {}
    versions = info.get("versions") or {}
    identities = info.get("encoder_identities") or {}
    command = _benchmark_command(cfg)
    common = dict(
        restarts=cfg.get("restarts", 1), track_best=cfg.get("track_best"), image_size=cfg.get("image_size"),
        seed=info.get("seed", cfg.get("seed")), package_version=versions.get("hf_ssl_robust"),
        git_revision=info.get("git_revision"), torch_version=versions.get("torch"),
        transformers_version=versions.get("transformers"), device=info.get("device"),
        num_processes=info.get("processes"), mixed_precision=info.get("mixed_precision") or "no",
        run=run_dir.resolve().name, command=command,
    )  # fmt: skip
    return [_row(r, common, identities) for r in records]


def _strength_rows(run_dir: Path) -> list[dict]:
    """`strength.json` summarises a `--attacks strong --worst_case` benchmark: per task and ε the clean
    value, EmbedAttack, the paper's attack, the best APGD loss, Square and the per-image worst case,
    with their flags and 95 % intervals where the file records them (older files have neither)."""
    data = json.loads((run_dir / "strength.json").read_text())
    args, machine = data.get("args") or {}, data.get("machine") or {}
    plan = data.get("attacks_per_task") or {}
    steps = int(args.get("steps") or 20)
    eps_args = " ".join(args.get("eps") or [])
    command = (f"python scripts/bench_strength.py --eps {eps_args} --steps {steps}"
               + (f" --max_eval_samples {args['max_eval_samples']}" if args.get("max_eval_samples") else "")
               + (f" --encoder {data['encoder']}" if args.get("encoder") else ""))  # fmt: skip
    common = dict(restarts=1, track_best=None, image_size=args.get("image_size"), seed=args.get("seed", 0),
                  package_version=None, git_revision=data.get("git_revision"), torch_version=machine.get("torch"), transformers_version=None,
                  device=machine.get("device"), num_processes=None, mixed_precision="no", run=run_dir.resolve().name,
                  command=command)  # fmt: skip
    n = args.get("max_eval_samples")
    records = []
    for s in data["strength"]:
        task, eps = s["task"], float(s["eps"])
        paper = (plan.get(task) or [None, None])[1]  # the plan lists embed first, then the paper's task attack
        base = dict(encoder=data["encoder"], task=task, dataset=args.get("dataset", "shapes"), metric=s["metric"],
                    num_samples=n, norm=args.get("norm", "linf"))  # fmt: skip
        flags, ci95 = s.get("flags") or {}, s.get("ci95") or {}
        records.append(dict(base, attack="none", eps=0.0, steps=0, step_size=0.0, value=s["clean"], flags=flags.get("none", []),
                            **({"ci95": ci95["clean"]} if ci95.get("clean") else {})))  # fmt: skip
        if s.get("prior") is not None:  # the image-free baseline of the same images (files from before priors have none)
            records.append(dict(base, encoder="prior", attack="none", eps=0.0, steps=0, step_size=0.0, value=s["prior"],
                                **({"ci95": ci95["prior"]} if ci95.get("prior") else {})))  # fmt: skip
        columns = (("embed", "embed"), (paper, "paper"), (s.get("apgd_loss"), "apgd"), (s.get("square_attack"), "square"), ("worst", "worst"))
        for attack, key in columns:
            if attack and s.get(key) is not None:
                # Square keeps the run's protocol (steps, step size: one board with its run) and carries its query budget.
                budget = {"queries": data["square_queries"]} if key == "square" and data.get("square_queries") else {}
                records.append(dict(base, attack=attack, eps=eps, steps=steps, step_size=eps / 4, **budget, value=s[key], flags=flags.get(attack, []),
                                    **({"ci95": ci95[key]} if ci95.get(key) else {})))  # fmt: skip
    return [_row(r, common, {}) for r in records]


def _row(record: dict, common: dict, identities: dict) -> dict:
    row = {k: None for k in COLUMNS}
    row.update(common)
    row.update({k: v for k, v in record.items() if k in COLUMNS})
    row["extra"] = json.dumps({k: v for k, v in record.items() if k not in COLUMNS}, sort_keys=True, default=str) or None
    row["flags"] = list(record.get("flags") or [])
    row["value"] = None if record.get("value") is None or _is_nan(record["value"]) else float(record["value"])
    if row["encoder"] == "prior":  # image-free baselines have no weights
        row.update(encoder_id="prior", encoder_fingerprint="prior", identity_derived=False)
    elif not (row["encoder_id"] and row["encoder_fingerprint"]):
        row.update(_identity(row["encoder"], identities.get(row["encoder"])))
    else:
        recorded = identities.get(row["encoder"]) or {}
        if recorded.get("fingerprint") == row["encoder_fingerprint"]:  # the run's identity map adds revision and hash
            row["encoder_revision"] = row["encoder_revision"] or recorded.get("revision")
            row["encoder_weights_sha256"] = row["encoder_weights_sha256"] or recorded.get("weights_sha256")
        row["identity_derived"] = False
    row["encoder_id"] = row["encoder_id"] and portable_encoder_id(row["encoder_id"])  # older runs: one checkout's path
    row.update(_dataset_facts(row["dataset"], row["task"]))
    if row["encoder_family"] is None or row["encoder_card"] is None:
        family, card = _encoder_facts(row["encoder_id"])
        row["encoder_family"] = row["encoder_family"] or family
        row["encoder_card"] = row["encoder_card"] or card
    return row


_IDENTITIES: dict[str, dict] = {}


def _identity(name: str, recorded: dict | None) -> dict:
    """Identity columns from the run's record of it, else derived now (see the module docstring)."""
    if recorded and recorded.get("fingerprint"):
        return dict(encoder_id=recorded.get("source") or name, encoder_fingerprint=recorded["fingerprint"],
                    encoder_revision=recorded.get("revision"), encoder_weights_sha256=recorded.get("weights_sha256"),
                    identity_derived=False)  # fmt: skip
    if name not in _IDENTITIES:
        from .encoders import bundled_encoders
        from .identity import encoder_identity

        target = name
        bundled = bundled_encoders()
        parts = Path(name).parts
        if not Path(name).exists() and len(parts) >= 3 and parts[-3:-1] == ("hf_ssl_robust", "assets") and parts[-1] in bundled:
            target = parts[-1]  # a bundled encoder recorded by its folder in another checkout
        if not (Path(target).is_dir() or target in bundled):
            raise ValueError(
                f"Encoder {name!r} has no recorded identity (encoder_id / encoder_fingerprint: the run predates them) "
                "and does not resolve to a folder on this machine, so its weights cannot be fingerprinted: re-run the "
                "benchmark with this version of hf-ssl-robust, or run this where the encoder folder exists.")  # fmt: skip
        ident = encoder_identity(target)
        _IDENTITIES[name] = dict(encoder_id=ident.public_id, encoder_fingerprint=ident.fingerprint, encoder_revision=ident.revision,
                                 encoder_weights_sha256=ident.weights_sha256, identity_derived=True)  # fmt: skip
    return dict(_IDENTITIES[name])


def _dataset_facts(name: str | None, task: str | None) -> dict:
    from .data import get_dataset_spec

    try:
        spec = get_dataset_spec(name, task=task)
    except (ValueError, KeyError, TypeError):
        return {}
    return {"dataset_id": spec.hub_id or (f"generated:{name}" if spec.source == "synthetic" else f"local:{name}"),
            "dataset_split": spec.eval_split}


def _encoder_facts(encoder_id: str | None) -> tuple[str | None, str | None]:
    """(family, link to the model card) of an encoder id: a Hub id or a local folder."""
    from .encoders import ASSETS_DIR
    from .hub import FAMILIES

    if not encoder_id or encoder_id == "prior":
        return None, None
    folder = Path(encoder_id)
    if not folder.is_dir() and folder.parts[-3:-1] == ("hf_ssl_robust", "assets") and (ASSETS_DIR / folder.name).is_dir():
        folder = ASSETS_DIR / folder.name  # a bundled encoder, recorded from another checkout of the package
    if folder.is_dir():
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        family = FAMILIES.get(config.get("model_type"), config.get("model_type"))
        if folder.resolve().parent == ASSETS_DIR.resolve() or folder.parts[-3:-1] == ("hf_ssl_robust", "assets"):
            return family, f"hf_ssl_robust/assets/{folder.name}/README.md"  # bundled: the card ships with the package
        return family, str(folder / "README.md") if (folder / "README.md").is_file() else None
    if _HUB_ID.match(encoder_id):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(encoder_id, "config.json")
        config = json.loads(Path(cached).read_text()) if isinstance(cached, str) else {}
        return FAMILIES.get(config.get("model_type"), config.get("model_type")), f"https://huggingface.co/{encoder_id}"
    return None, None


def _benchmark_command(cfg: dict) -> str:
    """The `hf-ssl-robust benchmark` command line that reproduces the run (from its resolved config)."""
    parts = ["hf-ssl-robust benchmark"]
    for key in ("encoders", "tasks", "datasets", "attacks", "eps"):
        if cfg.get(key):
            parts.append(f"--{key} " + " ".join(str(v) for v in cfg[key]))
    for key in ("steps", "step_size", "norm", "max_eval_samples", "image_size", "num_train_samples", "head_epochs",
                "head_lr", "batch_size", "mixed_precision", "seed"):
        if cfg.get(key) is not None and not (key == "step_size" and cfg[key] == "auto"):
            parts.append(f"--{key} {cfg[key]}")
    parts += [f"--{k}" for k in ("track_best", "worst_case", "progressive") if cfg.get(k)]
    parts += [f"--data_dir {d}" for d in cfg.get("data_dir") or []]
    return " ".join(parts)


# --- validation -----------------------------------------------------------------------------------
def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def describe(row: dict) -> str:
    """How a message names a record: `shapes-resnet-tiny / classification / shapes / pgd ε=8/255 / accuracy`."""
    eps = row.get("eps")
    eps = format_eps(float(eps)) if isinstance(eps, (int, float)) else eps
    return f"{row.get('encoder')} / {row.get('task')} / {row.get('dataset')} / {row.get('attack')} ε={eps} / {row.get('metric')}"


def row_problems(row: dict) -> list[str]:
    """What is wrong with one row (empty when it may be shared and ranked)."""
    missing = [k for k in REQUIRED if row.get(k) is None or row.get(k) == ""]
    if row.get("encoder") == "prior":
        missing = [k for k in missing if k not in ("steps", "seed")]
    if missing:
        return [f"missing provenance {missing}"]
    problems = []
    task, metric, value = row["task"], row["metric"], row.get("value")
    if task not in TASK_METRICS:
        problems.append(f"unknown task {task!r} (known: {sorted(TASK_METRICS)})")
    elif metric not in TASK_METRICS[task]:
        problems.append(f"unknown metric {metric!r} for {task} (known: {sorted(TASK_METRICS[task])})")
    elif value is not None and not _is_nan(value):
        low, high = (0.0, 1.0) if HIGHER_IS_BETTER[metric] else (0.0, math.inf)
        if not isinstance(value, (int, float)) or not low <= float(value) <= high:
            problems.append(f"value {value!r} outside [{low:g}, {high:g}] for {metric}")
    if row["norm"] not in ("linf", "l2"):
        problems.append(f"unknown norm {row['norm']!r} (linf or l2)")
    eps = row["eps"]
    if not isinstance(eps, (int, float)) or not 0 <= eps <= (1.0 if row["norm"] == "linf" else math.inf):
        problems.append(f"eps {eps!r} outside its range (L-inf: [0, 1] pixel units; L2: >= 0)")
    elif (row["attack"] == "none") != (float(eps) == 0.0):
        problems.append("clean rows (attack none) have eps 0, attacked rows eps > 0")
    if not _ATTACK_NAME.match(str(row["attack"])):
        problems.append(f"attack name {row['attack']!r} is not a registry name such as pgd or apgd:ce")
    for key, low in (("steps", 0), ("num_samples", 1), ("restarts", 1)):
        if row.get(key) is not None and (not isinstance(row[key], int) or isinstance(row[key], bool) or row[key] < low):
            problems.append(f"{key} {row[key]!r} must be an integer >= {low}")
    if row.get("seconds") is not None and not (isinstance(row["seconds"], (int, float)) and row["seconds"] >= 0):
        problems.append(f"seconds {row['seconds']!r} must be >= 0")
    return problems


def validate_rows(rows: list[dict], source: str) -> list[dict]:
    """`rows` unchanged when every one passes `row_problems`; else one ValueError naming each bad record."""
    bad = [(i, row, p) for i, row in enumerate(rows) for p in [row_problems(row)] if p]
    if bad:
        lines = [f"  record {i} ({describe(row)}): {'; '.join(p)}" for i, row, p in bad[:10]]
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{source}: {len(bad)} of {len(rows)} records refused:\n" + "\n".join(lines) + more)
    return rows


def protocol_of(row: dict) -> tuple:
    """What must match for two numbers of one threat model to be ranked together."""
    return (row.get("steps"), round(float(row.get("step_size") or 0), 9), row.get("restarts") or 1,
            row.get("num_samples"), row.get("image_size"))  # fmt: skip


def identity_key(row: dict) -> tuple:
    """Same encoder weights, cell, number and protocol: one result however often it was shared."""
    return (row["encoder_fingerprint"], row["task"], row["dataset"], row["norm"], round(float(row["eps"]), 9),
            row["attack"], row["metric"], protocol_of(row))  # fmt: skip


def dedupe(rows: list[dict]) -> list[dict]:
    """Duplicates merged into the first one seen; its `run` lists every run it came from, and it is
    flagged `duplicates_disagree` when their values differ (a nondeterministic run, another seed)."""
    kept: dict[tuple, dict] = {}
    for row in rows:
        key = identity_key(row)
        if key in kept:
            first = kept[key]
            runs = first["run"].split(", ") if first.get("run") else []
            if row.get("run") and row["run"] not in runs:
                first["run"] = ", ".join([*runs, row["run"]])
            flags = set(first["flags"] or []) | set(row.get("flags") or [])
            a, b = first.get("value"), row.get("value")
            if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 1e-9):
                flags.add("duplicates_disagree")
            first["flags"] = sorted(flags)
        else:
            kept[key] = dict(row)
    return list(kept.values())


# --- datasets: write, card, push, read -------------------------------------------------------------
def write_results_dataset(rows: list[dict], out: str | os.PathLike, repo_id: str | None = None) -> Path:
    """`out/data/results.parquet` and `out/README.md` (the dataset card, whose YAML `configs` lets
    `datasets.load_dataset(repo_id)` find the table). Returns `out`."""
    from .sharing_card import render_dataset_card

    rows = dedupe(validate_rows(rows, str(out)))
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows], schema=SCHEMA)
    pq.write_table(table, out / PARQUET_PATH)
    (out / "README.md").write_text(render_dataset_card(rows, repo_id=repo_id))
    return out


def push_results(run_dir: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a run as the dataset repo `repo_id` (created if needed); returns the commit URL.

    Raises:
        ValueError: a bad `repo_id`, or the run fails `run_records`.
        HubPushError: offline, not logged in, no rights; the Hub's own error is its `__cause__`.
    """
    from . import hub

    if not _HUB_ID.match(repo_id or ""):
        raise ValueError(f"repo_id must be 'user_or_org/name', got {repo_id!r}.")
    rows = run_records(run_dir)
    if hub._offline():
        raise hub.HubPushError(f"Cannot push to {repo_id!r}: HF_HUB_OFFLINE is set. Write the files with --to PATH, "
                               f"or unset HF_HUB_OFFLINE on a machine with network. {hub.LOGIN_HINT}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_results_dataset(rows, Path(tmp) / "dataset", repo_id=repo_id)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                                     commit_message=f"Robustness results of {', '.join(sorted({r['encoder'] for r in rows}))}")
        except Exception as err:  # noqa: BLE001 - every failure of the Hub client becomes one clear message
            raise hub.HubPushError(f"Pushing the results of {str(run_dir)!r} to the dataset {repo_id!r} failed "
                                   f"({type(err).__name__}: {err}). {hub.LOGIN_HINT}") from err  # fmt: skip
    return getattr(info, "commit_url", None) or f"https://huggingface.co/datasets/{repo_id}"


def read_dataset_folder(folder: str | os.PathLike) -> list[dict]:
    """The rows of a results dataset folder (`data/*.parquet`), validated."""
    files = sorted(Path(folder).glob("data/*.parquet")) or sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise ValueError(f"{str(folder)!r} holds no data/*.parquet: is it written by `hf-ssl-robust results push --to`?")
    rows = []
    for path in files:
        table = pq.read_table(path)
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: columns {missing} missing (missing provenance): not an hf-ssl-robust results dataset.")
        rows += [{k: r.get(k) for k in COLUMNS} for r in table.to_pylist()]
    return validate_rows(rows, str(folder))


def read_source(source: str | os.PathLike) -> list[dict]:
    """Rows from a run folder, a results dataset folder (or one of their files), or a Hub dataset id."""
    path = Path(source)
    if path.exists():
        if path.is_file() and path.suffix == ".parquet":
            path = path.parent.parent if path.parent.name == "data" else path.parent
        if path.is_dir() and list(path.glob("data/*.parquet")) + list(path.glob("*.parquet")):
            return read_dataset_folder(path)
        return run_records(path)
    if _HUB_ID.match(str(source)):
        try:
            local = snapshot_download(str(source), repo_type="dataset", allow_patterns=["*.parquet", "**/*.parquet", "README.md"])
        except Exception as err:  # noqa: BLE001 - offline, missing, private: one message
            raise ValueError(f"Cannot read the Hub dataset {str(source)!r} ({type(err).__name__}: {err}); it is no folder "
                             "here either. Check the path or the id, the network (HF_HUB_OFFLINE) and, for a private "
                             "dataset, your login.") from err  # fmt: skip
        return read_dataset_folder(local)
    raise ValueError(f"{str(source)!r} is neither a run folder, a results dataset folder nor a Hub dataset id (user/name).")
