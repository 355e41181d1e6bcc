"""The logic behind the Gradio Space (`space/app.py`), importable and testable without gradio.

One attack on one image, end to end: read and sanitise the image, get a task head for the
encoder (from a heads folder, else train a small one on ShapesWorld once and cache it on disk),
attack it, and describe clean vs adversarial predictions with numbers and pictures.

Every limit is checked here, on the server, whatever the UI allows; a bad request raises
`SpaceError` whose message is meant for the visitor (no stack trace).

    >>> backend = SpaceBackend(encoders=["./my-encoder"])
    >>> out = backend.run("./my-encoder", "segmentation", "segpgd", eps_255=8, steps=10, image=pil_image)
    >>> out.metrics["pixels_flipped"]
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attack_suites import build_attack
from .attacks import make_attack
from .attacks.objectives import DEFAULT_LOSS
from .data import get_dataset_spec
from .encoders import PRESETS, EncoderNotFoundError, bundled_encoders, load_encoder
from .precision import autocast_for, check_mixed_precision
from .results import display_name
from .tasks import TASKS, get_task

# Server-side limits (the UI shows the same ranges, but requests can come from the API).
MAX_EPS_255 = 16
MAX_STEPS = 50
MIN_SIDE, MAX_SIDE = 32, 512  # working resolution (long side, px)
MAX_FILE_MB = 25
MAX_INPUT_PIXELS = 40_000_000  # refuse to decode larger images at all
HEAD_IMAGE_SIZE = 64  # ShapesWorld heads are trained at this size
# Epochs for heads the app trains itself (fewer than the paper's, so a first request takes ~a minute).
APP_EPOCHS = {"classification": 5, "segmentation": 15, "depth": 4}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
PALETTE = (  # background, then one colour per class (wraps around)
    "#3a3a3a", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
    "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324",
)


class SpaceError(ValueError):
    """A problem with the visitor's request; the message is shown in the UI as-is."""


@dataclass
class AttackOutcome:
    """What the UI shows. Arrays are numpy: images `[H, W, 3]` uint8, masks `[H, W]` int."""

    task: str
    attack: str
    clean_image: np.ndarray
    adv_image: np.ndarray
    perturbation: np.ndarray  # amplified: 0.5 + delta / (2 eps)
    losses: list[float]
    metrics: dict
    notes: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    clean_probs: dict[str, float] | None = None  # classification
    adv_probs: dict[str, float] | None = None
    clean_mask: np.ndarray | None = None  # segmentation
    adv_mask: np.ndarray | None = None
    clean_depth: np.ndarray | None = None  # depth, metres
    adv_depth: np.ndarray | None = None


# -- images ---------------------------------------------------------------------------------


def read_image(source) -> tuple[np.ndarray, list[str]]:
    """Any image (path, PIL image, numpy array) -> float32 `[H, W, 3]` in [0, 1], plus notes.

    Grayscale, palette, RGBA (composited on white), CMYK, 16-bit and float images are converted;
    non-images and oversized files raise `SpaceError`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if source is None:
        raise SpaceError("No image: upload one or pick an example.")
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise SpaceError(f"File {path.name!r} not found on the server; upload it again.")
        size_mb = path.stat().st_size / 2**20
        if size_mb > MAX_FILE_MB:
            raise SpaceError(f"{path.name!r} is {size_mb:.0f} MB; the limit is {MAX_FILE_MB} MB.")
        try:
            img = Image.open(path)
            _check_pixels(img)
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
            img.load()
        except SpaceError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
            raise SpaceError(
                f"{path.name!r} is not an image this app can read ({type(err).__name__}). "
                "Upload a PNG, JPEG, WebP, BMP, GIF or TIFF file."
            ) from None
        source = img
    if not isinstance(source, Image.Image):
        raise SpaceError(f"Expected an image, got {type(source).__name__}.")
    _check_pixels(source)
    img = ImageOps.exif_transpose(source) if source.getexif().get(274, 1) != 1 else source
    notes = []
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
        notes.append("animated image: using its first frame")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr, more = _array_to_rgb(np.asarray(img), bits_hint=16 if img.mode.startswith("I;16") else None)
        return arr, notes + more
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
        notes.append("transparency composited on white")
    elif img.mode in ("1", "L"):
        notes.append("grayscale image: copied to 3 channels")
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return arr, notes


def _check_pixels(img) -> None:
    if img.width * img.height > MAX_INPUT_PIXELS:
        raise SpaceError(f"The image is {img.width}x{img.height} pixels; the limit is {MAX_INPUT_PIXELS // 10**6} megapixels.")


def _array_to_rgb(arr: np.ndarray, bits_hint: int | None = None) -> tuple[np.ndarray, list[str]]:
    notes = []
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)) or min(arr.shape[:2]) < 1:
        raise SpaceError(f"Cannot read an image from an array of shape {arr.shape}.")
    if arr.dtype == bool:
        x = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255
    elif np.issubdtype(arr.dtype, np.integer):
        hi = float(arr.max()) if arr.size else 0.0
        if bits_hint == 16 or arr.dtype == np.uint16 or 255 < hi <= 65535:
            x, kind = arr.astype(np.float32) / 65535, "16-bit"
        elif hi <= 255 and arr.min() >= 0:
            x, kind = arr.astype(np.float32) / 255, "integer"
        else:
            x, kind = _minmax(arr), "high dynamic range"
        notes.append(f"{kind} image rescaled to [0, 1]")
    elif np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float32)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            notes.append("non-finite pixels set to 0")
        if x.size and (x.min() < 0 or x.max() > 1):
            x = _minmax(x)
            notes.append("float image rescaled to [0, 1]")
    else:
        raise SpaceError(f"Unsupported pixel type {arr.dtype}.")
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] in (2, 4):  # alpha on white
        alpha = x[..., -1:]
        x = x[..., :-1] * alpha + (1 - alpha)
        notes.append("transparency composited on white")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
        notes.append("grayscale image: copied to 3 channels")
    return np.ascontiguousarray(np.clip(x, 0, 1), dtype=np.float32), notes


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def fit_image(arr: np.ndarray, long_side: int, min_side: int = 8) -> tuple[Tensor, list[str]]:
    """`[H, W, 3]` -> `[1, 3, h, w]` tensor with `max(h, w) <= long_side` (downscale only)."""
    h, w = arr.shape[:2]
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
    notes = []
    if max(h, w) > long_side:
        scale = long_side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if min(nh, nw) < min_side:
            raise SpaceError(f"The image ({w}x{h}) is too elongated: downscaled to {long_side}px it would be thinner than {min_side}px.")
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        notes.append(f"downscaled from {w}x{h} to {nw}x{nh} (working size: long side {long_side}px)")
    elif min(h, w) < min_side:
        scale = min_side / min(h, w)
        nh, nw = max(min_side, round(h * scale)), max(min_side, round(w * scale))
        if max(nh, nw) > MAX_SIDE:
            raise SpaceError(f"The image ({w}x{h}) is too elongated for this app.")
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False).clamp(0, 1)
        notes.append(f"upscaled from {w}x{h} to {nw}x{nh} (smaller than one patch)")
    return x, notes


def to_uint8(x: Tensor | np.ndarray) -> np.ndarray:
    """`[1, 3, H, W]` / `[3, H, W]` tensor or `[H, W, 3]` float array in [0, 1] -> `[H, W, 3]` uint8."""
    if isinstance(x, Tensor):
        x = x.detach().float().cpu()
        x = x[0] if x.ndim == 4 else x
        x = x.permute(1, 2, 0).numpy()
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def image_key(pixels: Tensor) -> str:
    """Hash of the uint8 image, to recognise the ShapesWorld examples (whose labels are known)."""
    return hashlib.sha1(to_uint8(pixels).tobytes()).hexdigest()


# -- examples -------------------------------------------------------------------------------


def write_examples(folder: str | Path, num_scenes: int = 3, photo_side: int = 256) -> tuple[list[str], dict]:
    """Write example PNGs: ShapesWorld scenes (labels known) and offline photos that ship with
    scikit-image / scikit-learn (when installed). Returns the paths and `{image_key: labels}`."""
    from PIL import Image

    from .data.synthetic import render_scenes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, truths = [], {}
    scenes = render_scenes(num_scenes, HEAD_IMAGE_SIZE, seed=2024)
    for i in range(num_scenes):
        px = scenes["pixel_values"][i : i + 1]
        path = folder / f"shapesworld_{i}.png"
        Image.fromarray(to_uint8(px)).save(path)
        paths.append(str(path))
        truths[image_key(px)] = {k: scenes[k][i] for k in ("labels", "mask", "depth")}
    for name, arr in _photos():
        img = Image.fromarray(arr).convert("RGB")
        img.thumbnail((photo_side, photo_side), Image.Resampling.LANCZOS)
        path = folder / f"{name}.png"
        img.save(path)
        paths.append(str(path))
    return paths, truths


def _photos():
    try:
        from skimage import data

        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            yield name, getattr(data, name)()
    except Exception:  # noqa: BLE001 - optional package, or its data files missing
        pass
    try:
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        for fname, arr in zip(images.filenames, images.images):
            yield Path(fname).stem, arr
    except Exception:  # noqa: BLE001
        pass


# -- models ---------------------------------------------------------------------------------


class _Counting(nn.Module):
    """Calls `model` and reports each forward pass, so that the UI can show attack progress."""

    def __init__(self, model: nn.Module, callback: Callable[[int], None]):
        super().__init__()
        self.model, self.callback, self.calls = model, callback, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        self.callback(self.calls)
        return self.model(*args, **kwargs)

    def read_tokens(self, pixels):  # only for heads: EmbedAttack on exactly what the head reads
        self.calls += 1
        self.callback(self.calls)
        return self.model.read_tokens(pixels)


class SpaceBackend:
    """Encoders, cached heads and the attack of the Space.

    Args:
        encoders: names or folders offered besides the bundled ones (the server's own choice:
            visitors may only type Hub ids, never local paths).
        heads_dir: folder with trained heads `<encoder>-shapes-<task>` (as the benchmark writes).
        cache_dir: where heads trained by the app and example images are kept.
        allow_hub: let visitors type Hub ids.
        train_samples: ShapesWorld images used to train a missing head.
        train_epochs: its epochs (default: `APP_EPOCHS` of the task).
        mixed_precision: `no` or `bf16` (the Space runs on CPU; the pixel layer stays fp32) for
            the attack, the clean and adversarial forwards, and heads it trains.
        device: where models and images live (default `cpu`); heads loaded from disk or trained
            (which may use a GPU) are moved there.
    """

    def __init__(self, encoders=(), heads_dir: str | None = None, cache_dir: str | None = None,
                 allow_hub: bool = True, train_samples: int = 512, train_epochs: int | None = None, max_models: int = 6,
                 mixed_precision: str = "no", device: str | torch.device = "cpu"):
        if check_mixed_precision(mixed_precision) not in ("no", "bf16"):
            raise ValueError(f"The Space runs on CPU: mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}.")
        self.mixed_precision = mixed_precision
        self.device = torch.device(device)
        self.encoders = {**{n: str(p) for n, p in bundled_encoders().items()}, **{display_name(str(e)): str(e) for e in encoders}}
        self.heads_dirs = [Path(d) for d in ([heads_dir] if heads_dir else [])] + [Path("outputs/benchmark/heads")]
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "hf_ssl_robust" / "space")
        self.allow_hub, self.train_samples, self.max_models = allow_hub, train_samples, max_models
        self.train_epochs = train_epochs
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}
        self.examples, self.truths = [], {}

    # -- choices -------------------------------------------------------------------------------
    def encoder_choices(self) -> list[str]:
        return list(self.encoders) + ([n for n in PRESETS if n not in self.encoders][:1] if self.allow_hub else [])

    def prepare_examples(self) -> list[str]:
        if not self.examples:
            self.examples, self.truths = write_examples(self.cache_dir / "examples")
        return self.examples

    def resolve_encoder(self, name: str) -> str:
        """Visitor input -> what `load_encoder` gets; refuses local paths it was not given."""
        name = (name or "").strip()
        if not name:
            raise SpaceError("Choose an encoder.")
        if name in self.encoders:
            return self.encoders[name]
        if name in self.encoders.values():
            return name
        if not self.allow_hub:
            raise SpaceError(f"Unknown encoder {name!r}; available here: {', '.join(self.encoders) or 'none'}.")
        if name in PRESETS:
            return PRESETS[name]
        if not _HUB_ID.match(name) or ".." in name or Path(name).exists():
            raise SpaceError(f"{name!r} is not a Hub model id (like `facebook/dinov2-small`) nor one of: {', '.join(self.encoder_choices())}.")
        return name

    # -- heads ---------------------------------------------------------------------------------
    def head_folders(self, encoder: str, task: str) -> list[Path]:
        slug = f"{display_name(encoder)}-shapes-{task}"
        digest = hashlib.sha1(encoder.encode()).hexdigest()[:8]
        cached = self.cache_dir / "heads" / f"{display_name(encoder)}-{digest}-shapes-{task}"
        return [d / slug for d in self.heads_dirs] + [cached]

    def get_model(self, encoder: str, task: str, status: Callable[[str], None] = lambda s: None):
        """The head of `task` for `encoder` (loaded once, kept in an LRU of `max_models`)."""
        key = (encoder, task)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one visitor trains a missing head; the others wait for it
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = self._load_or_train(encoder, task, status)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        return model

    def _load_or_train(self, encoder: str, task: str, status):
        head_class = get_task(task).head_class
        folders = self.head_folders(encoder, task)
        for folder in folders:
            if (folder / "config.json").is_file():
                status(f"loading the {task} head from {folder}")
                return head_class.from_pretrained(folder).to(self.device).eval()
        status(f"loading encoder {encoder}")
        enc = load_encoder(encoder)
        from .training import TrainHeadConfig, train_head

        status(f"no {task} head for {display_name(encoder)} yet: training one on {self.train_samples} ShapesWorld images (once; cached in {folders[-1]})")
        cfg = TrainHeadConfig(encoder=encoder, task=task, dataset="shapes", image_size=HEAD_IMAGE_SIZE,
                              num_train_samples=self.train_samples, num_eval_samples=64,
                              epochs=self.train_epochs or APP_EPOCHS[task], output_dir=str(folders[-1]),
                              mixed_precision=self.mixed_precision)
        model, _ = train_head(cfg, encoder=enc)
        return model.to(self.device).eval()

    # -- the attack ----------------------------------------------------------------------------
    def validate(self, encoder, task, attack, eps_255, steps, size) -> tuple[str, str, str, float, int, int]:
        if task not in TASKS:
            raise SpaceError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
        t = get_task(task)
        attack = t.task_attack if attack in ("task", "task attack") else attack
        if attack not in ("embed", t.task_attack, "apgd"):
            raise SpaceError(f"Attack {attack!r} does not apply to {task}; choose `embed`, `{t.task_attack}` or `apgd`.")
        try:
            eps_255, steps, size = float(eps_255), int(steps), int(size)
        except (TypeError, ValueError):
            raise SpaceError("ε, steps and size must be numbers.") from None
        if not (np.isfinite(eps_255) and 0 <= eps_255 <= MAX_EPS_255):
            raise SpaceError(f"ε must be between 0 and {MAX_EPS_255}/255, got {eps_255:g}/255.")
        if not 1 <= steps <= MAX_STEPS:
            raise SpaceError(f"Steps must be between 1 and {MAX_STEPS}, got {steps}.")
        if not MIN_SIDE <= size <= MAX_SIDE:
            raise SpaceError(f"Working size must be between {MIN_SIDE} and {MAX_SIDE} px, got {size}.")
        return self.resolve_encoder(encoder), task, attack, eps_255, steps, size

    def run(self, encoder: str, task: str, attack: str, eps_255: float = 8, steps: int = 10, image=None,
            size: int = 128, seed: int = 0, progress: Callable[[float, str], None] = lambda f, s: None) -> AttackOutcome:
        """Attack one image. `attack` is `embed`, the task's attack (`task` means the latter) or `apgd`
        (APGD with the task's default loss, as `--attacks apgd` in the benchmark)."""
        encoder, task, attack, eps_255, steps, size = self.validate(encoder, task, attack, eps_255, steps, size)
        arr, notes = read_image(image)
        progress(0.0, "loading model")
        try:
            model = self.get_model(encoder, task, status=lambda s: progress(0.0, s))
        except EncoderNotFoundError as err:
            raise SpaceError(str(err)) from None
        x, more = fit_image(arr, size, min_side=model.patch_size)
        x = x.to(self.device)
        notes += more
        t, spec = get_task(task), get_dataset_spec("shapes", task=task)
        truth = self.truths.get(image_key(x))
        eps = eps_255 / 255
        common = dict(eps=eps, step_size=max(eps / 4, 0.25 / 255), steps=steps, seed=seed)
        if attack == "apgd":  # its own step-size schedule (the step size above is not used)
            atk = build_attack(f"apgd:{DEFAULT_LOSS[task]}", t, spec, **common)
        else:
            atk = make_attack(attack, **common, **t.attack_kwargs(attack, spec))
        start = time.perf_counter()
        with autocast_for(self.mixed_precision, x.device):  # clean, attack and adversarial in one precision
            with torch.no_grad():
                clean_out = model(x)
                clean_tokens = model.encoder(x, pre_norm=t.embed_pre_norm)
            victim = model  # EmbedAttack reads the head's own tokens (`read_tokens`), the task attack its output
            calls = steps + (1 if attack == "embed" else 0)
            counted = _Counting(victim, lambda i: progress(min(i / calls, 1.0), f"attack step {max(i - calls + steps, 0)}/{steps}"))
            # The task attack pushes the prediction away from the clean one (the standard choice without
            # labels; for ShapesWorld examples the ground-truth numbers are reported besides).
            target = None if attack == "embed" else t.predict(clean_out).detach()
            result = atk.perturb(counted, x, target)
            adv = result.pixels
            with torch.no_grad():
                adv_out = model(adv)
                adv_tokens = model.encoder(adv, pre_norm=t.embed_pre_norm)
        seconds = time.perf_counter() - start
        delta = adv - x
        pert = (0.5 + delta / (2 * eps)) if eps > 0 else torch.full_like(x, 0.5)
        out = AttackOutcome(task=task, attack=attack, clean_image=to_uint8(x), adv_image=to_uint8(adv), perturbation=to_uint8(pert),
                            losses=[float(v) for v in result.losses], metrics={}, notes=notes)
        m = out.metrics
        m.update(encoder=display_name(encoder), task=task, attack=attack, eps=f"{eps_255:g}/255", steps=steps,
                 image_size=f"{x.shape[-1]}x{x.shape[-2]}", linf_255=round(float(delta.abs().max()) * 255, 3))
        m.update(_embedding_change(clean_tokens, adv_tokens))
        _describe(out, t, spec, model, clean_out, adv_out, truth)
        m["attack_loss_first"], m["attack_loss_last"] = (out.losses[0], out.losses[-1]) if out.losses else (None, None)
        m["seconds"] = round(seconds, 2)
        progress(1.0, "done")
        return out


def _embedding_change(clean, adv) -> dict:
    res = {}
    for name, a, b in (("cls", clean.cls, adv.cls), ("patch", clean.patches, adv.patches)):
        a, b = a.flatten(0, -2).float(), b.flatten(0, -2).float()  # [N, D]
        l2 = torch.linalg.vector_norm(b - a, dim=-1)
        res[f"{name}_l2_change"] = round(float(l2.mean()), 4)
        res[f"{name}_relative_l2_change"] = round(float((l2 / torch.linalg.vector_norm(a, dim=-1).clamp_min(1e-12)).mean()), 4)
        res[f"{name}_cosine_similarity"] = round(float(F.cosine_similarity(a, b, dim=-1).mean()), 4)
    return res


def _describe(out: AttackOutcome, t, spec, model, clean_out, adv_out, truth) -> None:
    m = out.metrics
    if t.name == "classification":
        names = list(spec.class_names)
        pc, pa = clean_out.logits.softmax(-1)[0], adv_out.logits.softmax(-1)[0]
        out.class_names = names
        out.clean_probs = {n: float(p) for n, p in zip(names, pc)}
        out.adv_probs = {n: float(p) for n, p in zip(names, pa)}
        ic, ia = int(pc.argmax()), int(pa.argmax())
        m.update(clean_top1=names[ic], clean_confidence=round(float(pc[ic]), 4), adv_top1=names[ia],
                 adv_confidence=round(float(pa[ia]), 4), prediction_flipped=ic != ia,
                 clean_class_prob_drop=round(float(pc[ic] - pa[ic]), 4))
        if truth is not None:
            y = int(truth["labels"])
            m.update(true_class=names[y], clean_correct=ic == y, adv_correct=ia == y)
    elif t.name == "segmentation":
        names = list(spec.class_names)
        mc, ma = t.predict(clean_out)[0].cpu(), t.predict(adv_out)[0].cpu()  # compared with host truths
        out.class_names, out.clean_mask, out.adv_mask = names, mc.numpy(), ma.numpy()
        m.update(pixels_flipped=round(float((mc != ma).float().mean()), 4), pixels_flipped_count=int((mc != ma).sum()),
                 miou_adv_vs_clean=round(_miou(ma, mc, len(names)), 4))
        if truth is not None:
            gt = truth["mask"]
            m.update(clean_pixel_accuracy=round(float((mc == gt).float().mean()), 4),
                     adv_pixel_accuracy=round(float((ma == gt).float().mean()), 4),
                     clean_miou=round(_miou(mc, gt, len(names)), 4), adv_miou=round(_miou(ma, gt, len(names)), 4))
    else:
        dc, da = t.predict(clean_out)[0].float().cpu(), t.predict(adv_out)[0].float().cpu()
        out.clean_depth, out.adv_depth = dc.numpy(), da.numpy()
        diff = da - dc
        m.update(depth_mean_abs_change_m=round(float(diff.abs().mean()), 4), depth_rmse_adv_vs_clean_m=round(float(diff.pow(2).mean().sqrt()), 4),
                 depth_abs_rel_change=round(float((diff.abs() / dc.clamp_min(1e-6)).mean()), 4),
                 clean_depth_range_m=[round(float(dc.min()), 3), round(float(dc.max()), 3)])
        if truth is not None:
            gt = truth["depth"]
            valid = (gt > 0) & (gt <= float(spec.max_depth or 10))
            rc = float((dc - gt)[valid].pow(2).mean().sqrt())
            ra = float((da - gt)[valid].pow(2).mean().sqrt())
            m.update(clean_rmse_vs_truth_m=round(rc, 4), adv_rmse_vs_truth_m=round(ra, 4), rmse_increase_m=round(ra - rc, 4))


def _miou(pred: Tensor, ref: Tensor, k: int) -> float:
    ious = []
    for c in range(k):
        p, r = pred == c, ref == c
        union = int((p | r).sum())
        if union:
            ious.append(int((p & r).sum()) / union)
    return float(np.mean(ious)) if ious else float("nan")


# -- rendering ------------------------------------------------------------------------------


def colour_mask(mask: np.ndarray, image: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Class mask blended over the image, one PALETTE colour per class."""
    colours = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.float32)
    over = colours[mask % len(PALETTE)]
    return (image * (1 - alpha) + over * alpha).round().astype(np.uint8)


def render_depth(depths: list[np.ndarray], titles: list[str], scale: int = 4) -> np.ndarray:
    """Depth maps side by side on one shared colour scale (metres), with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmin = float(min(d.min() for d in depths))
    vmax = float(max(d.max() for d in depths))
    h, w = depths[0].shape
    fig, axes = plt.subplots(1, len(depths), figsize=(2.6 * len(depths) * max(w / h, 0.5) + 0.9, 2.9), squeeze=False)
    for ax, d, title in zip(axes[0], depths, titles):
        im = ax.imshow(d, cmap="magma_r", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    bar = fig.colorbar(im, ax=list(axes[0]), fraction=0.04, pad=0.02)
    bar.set_label("depth (m)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return _figure_to_array(fig, plt)


def render_losses(losses: list[float], attack: str) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    if losses:
        ax.plot(range(1, len(losses) + 1), losses, "-o", ms=3)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(f"{attack} objective", fontsize=8)
    ax.set_title("objective (maximised)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_array(fig, plt)


def _figure_to_array(fig, plt) -> np.ndarray:
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


def find_results(root: str | Path = "outputs", extra=()) -> list[str]:
    """`results.json` files under `root` (newest first) plus `extra`."""
    root = Path(root)
    found = sorted(root.rglob("results.json"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    return [str(p) for p in [*map(Path, extra), *found] if Path(p).is_file()]


def leaderboard(records: list[dict]) -> tuple[list[str], list[list]]:
    """One row per (task, dataset, encoder): clean value and the worst attacked value at the largest ε
    (the per-image `worst` row when the run has one, else the most damaging single attack), with that
    record's automatic warnings (`flags`); `±` columns: half-widths of the 95 % bootstrap intervals over images
    (`uncertainty.py`; empty for results written before intervals), and `not separated from clean` among the warnings
    when the attacked value is within them."""
    from .results import TASK_TABLES
    from .uncertainty import half_width, record_interval, record_separated

    headers = ["task", "dataset", "encoder", "metric", "clean", "± clean (95 %)", "attacked (worst)", "± attacked (95 %)",
               "attack", "ε", "change", "warnings"]
    rows = []
    keys = sorted({(r["task"], r["dataset"], r["encoder"]) for r in records})
    for task, dataset, encoder in keys:
        metric = TASK_TABLES.get(task, (None, None))[1]
        mine = [r for r in records if (r["task"], r["dataset"], r["encoder"], r["metric"]) == (task, dataset, encoder, metric)]
        clean = [r for r in mine if r["attack"] == "none"]
        attacked = [r for r in mine if r["attack"] != "none"]
        if not mine:
            continue
        worst = None
        if attacked:
            top = max(float(r["eps"]) for r in attacked)
            at = [r for r in attacked if abs(float(r["eps"]) - top) < 1e-9]
            per_image = [r for r in at if r["attack"] == "worst"]  # the per-image worst case, when the run has one
            worst = per_image[-1] if per_image else (min if task != "depth" else max)(at, key=lambda r: r["value"])
        c = clean[-1]["value"] if clean else None
        warnings = list(worst.get("flags") or []) if worst else []  # diagnostics.FLAGS; legend under the tables
        if worst and record_separated(worst) is False:
            warnings.append("not separated from clean")
        rows.append([task, dataset, display_name(encoder), metric, _round(c), _round(half_width(record_interval(clean[-1])) if clean else None),
                     _round(worst["value"]) if worst else None, _round(half_width(record_interval(worst))) if worst else None,
                     worst["attack"] if worst else "", f"{float(worst['eps']) * 255:.0f}/255" if worst else "",
                     _round(worst["value"] - c) if worst and c is not None else None, ", ".join(warnings)])
    return headers, rows


def _round(v):
    return None if v is None else round(float(v), 4)
