"""ShapesWorld: procedurally rendered scenes with a class, a segmentation mask and metric depth.

A pinhole camera at height ``h`` looks horizontally over a textured ground plane. With image
coordinates normalised by the image height (``y`` grows downwards, horizon at ``y_h``, focal
length ``f``), a ground pixel at row ``y > y_h`` lies at depth ``z = f * h / (y - y_h)``; above the
horizon (sky) and beyond ``MAX_DEPTH`` the depth is ``MAX_DEPTH``. Each scene holds 1-4 flat
objects of distinct shape classes standing on the plane: an object at depth ``z`` has its base
on the row where the ground is at depth ``z`` and an apparent size ``f * R / z`` for a world
radius ``R``, so farther objects are higher and smaller. Objects are drawn far to near, so the
image, the mask and the depth map all follow the same occlusion order.

Labels, all consistent with each other:

* ``labels`` ``[N]``: the class of the object with the largest visible area (ties: lower class);
* ``mask`` ``[N, H, W]``: 0 = background, shape class ``k`` -> ``k + 1``;
* ``depth`` ``[N, H, W]``: metres, ``0 < depth <= MAX_DEPTH``. An object pixel is never farther
  than the ground (or sky) of its own row.

Colours, textures, lighting, haze and noise are drawn independently of the class. Every
sample depends only on ``(seed, index)``: its random numbers come from its own generator, and
all pixel work is batched with exactly rounded tensor ops (no transcendental functions), so
any slice of the stream renders bit-identically whatever the batch it is rendered in.

Example:
    >>> batch = render_scenes(8, image_size=64, seed=0)
    >>> batch["pixel_values"].shape, batch["mask"].shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8, 64, 64]))
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["SHAPE_CLASSES", "NUM_CLASSES", "MAX_DEPTH", "render_scenes", "make_shapes_dataset"]

SHAPE_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring")
NUM_CLASSES = len(SHAPE_CLASSES)
MAX_DEPTH: float = 10.0

MAX_OBJECTS = 4
_OBJ_PARAMS = 10  # uniforms per object slot
_SCENE_PARAMS = 40  # uniforms per scene
_NUM_PARAMS = _SCENE_PARAMS + MAX_OBJECTS * _OBJ_PARAMS
_GRID = 8  # value-noise lattice (power of two: exact wrap-around)
_SPLITS = {"train": 0, "validation": 1, "test": 2}

# --- shapes, defined inside the unit circle in local coordinates (u right, v down) ---------
_RING_INNER = 0.55
_CROSS_W, _CROSS_L = 0.33, 0.92
_STAR_OFFSET = math.cos(2 * math.pi / 5)  # edge lines of the inner pentagon of a pentagram
_STAR_INNER = _STAR_OFFSET / math.cos(math.pi / 5)  # inner radius (outer radius 1)


def _normals(n: int, phase: float) -> tuple[tuple[float, float], ...]:
    return tuple((math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n))


_SQUARE = (_normals(4, 0.0), math.sqrt(0.5))
_TRIANGLE = (_normals(3, math.pi / 2), 0.5)  # apex up
_STAR = (_normals(5, -math.pi / 2), _STAR_OFFSET)  # a point up
_AREAS = (
    math.pi,
    2.0,
    3 * math.sqrt(3) / 4,
    5 * _STAR_INNER * math.sin(math.pi / 5),
    2 * (2 * _CROSS_W) * (2 * _CROSS_L) - (2 * _CROSS_W) ** 2,
    math.pi * (1 - _RING_INNER**2),
)
# circumradius factor per class: the same world size gives the same area, whatever the class
_CLASS_SCALE = tuple(math.sqrt(min(_AREAS) / a) for a in _AREAS)


def _plane_margins(dx, dy, a, b, planes):
    """Margins ``offset - n . (u, v)`` (>= 0 inside) with ``u = a dx + b dy``, ``v = a dy - b dx``.

    ``dx`` is ``[m, 1, W]`` and ``dy`` ``[m, H, 1]``, so each margin costs one broadcast op."""
    normals, offset = planes
    return [(offset - dy * (nx * b + ny * a)) - dx * (nx * a - ny * b) for nx, ny in normals]


def _min(values):
    out = values[0]
    for v in values[1:]:
        out = torch.minimum(out, v)
    return out


def _margin(k: int, dx, dy, a, b, rr):
    """Signed inside-margin of class ``k`` (>= 0 inside); every shape lies in the unit circle."""
    if k == 0:  # disc
        return 1.0 - rr
    if k == 1:  # square
        return _min(_plane_margins(dx, dy, a, b, _SQUARE))
    if k == 2:  # triangle
        return _min(_plane_margins(dx, dy, a, b, _TRIANGLE))
    if k == 3:  # five-pointed star: inside at least 4 of the 5 inner-pentagon edge half-planes
        w = _plane_margins(dx, dy, a, b, _STAR)  # -> the second smallest margin must be >= 0
        pre, suf = [w[0]], [w[4]]
        for i in range(1, 4):
            pre.append(torch.minimum(pre[-1], w[i]))
            suf.append(torch.minimum(suf[-1], w[4 - i]))
        out = torch.maximum(suf[3], pre[3])  # all but w[0]; all but w[4]
        for i in range(1, 4):
            out = torch.maximum(out, torch.minimum(pre[i - 1], suf[3 - i]))
        return out
    if k == 4:  # cross
        u, v = (dx * a + dy * b).abs(), (dy * a - dx * b).abs()
        return torch.maximum(torch.minimum(_CROSS_W - u, _CROSS_L - v), torch.minimum(_CROSS_W - v, _CROSS_L - u))
    return torch.minimum(1.0 - rr, rr - _RING_INNER**2)  # ring


# --- randomness: one generator per (seed, index) ----------------------------------------------
_NOISE_SPAN = 4096


def _mix(*values: int) -> int:
    """splitmix64-style hash combine of ints -> 63-bit seed."""
    h = 0x9E3779B97F4A7C15
    for x in values:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def split_seed(split: str, seed: int = 0) -> int:
    """The stream seed of ShapesWorld's ``train`` / ``validation`` / ``test`` split (``make_shapes_dataset``)."""
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r}; available: {sorted(_SPLITS)}")
    return _mix(seed, 0x5EED, _SPLITS[split])


def scene_streams(seed: int = 0) -> dict[str, int]:
    """Every ShapesWorld stream the embedded default's steps render from, by use, as ``render_scenes`` seeds.

    Each step of ``scripts/make_embedded_default.sh`` reads only its own streams: pretraining renders its
    view pairs from ``pretraining`` (and the ViT recipe's whitening scenes from ``whitening``); its frozen
    probes train on ``probe_train`` and are scored on the ``validation`` split; the benchmark's heads and
    DeACL train on ``train``, heads are stopped on a hold-out of ``train``; the supervised ceiling trains on
    ``supervised_ceiling``; only the benchmark's scores read ``test``. A scene is a pure function of
    (stream seed, index), and ``tests/test_embedded_default.py`` checks that the streams share no scene.
    """
    return {
        "pretraining": seed,
        "whitening": seed + 0x3117E,
        "probe_train": seed + 0x9B0BE,
        "supervised_ceiling": seed + 7,
        **{split: split_seed(split, seed) for split in _SPLITS},
    }


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> torch.Tensor:
    """A fixed i.i.d. Gaussian sequence; each sample takes a contiguous window at its own offset."""
    return torch.randn(size + _NOISE_SPAN, generator=torch.Generator().manual_seed(0x5A5A))


# Uniforms that fix a scene's geometry (camera, objects' classes, places, sizes, tilts); every other
# uniform (colours, textures, sky, lighting, haze, noise, value-noise lattices) is appearance.
_GEOMETRY = torch.zeros(_NUM_PARAMS + 2 * _GRID * _GRID, dtype=torch.bool)
_GEOMETRY[:10] = True
for _j in range(MAX_OBJECTS):
    _GEOMETRY[_SCENE_PARAMS + _j * _OBJ_PARAMS : _SCENE_PARAMS + _j * _OBJ_PARAMS + 4] = True


def _draw(num: int, seed: int, start: int, height: int, width: int, appearance: int | None = None):
    """Per-sample random numbers: scene uniforms, value-noise lattices and pixel noise.

    With ``appearance`` set, the appearance uniforms come from their own generator seeded by
    ``(seed, index, appearance)`` while the geometry ones stay those of ``(seed, index)``."""
    uniforms = torch.empty(num, _NUM_PARAMS + 2 * _GRID * _GRID)
    redrawn = torch.empty(uniforms.shape[1])
    gen = torch.Generator()
    for i in range(num):
        gen.manual_seed(_mix(seed, start + i))
        torch.rand(uniforms.shape[1], generator=gen, out=uniforms[i])
        if appearance is not None:
            gen.manual_seed(_mix(seed, start + i, 0xA99EA, appearance))
            torch.rand(uniforms.shape[1], generator=gen, out=redrawn)
            uniforms[i] = torch.where(_GEOMETRY, uniforms[i], redrawn)
    params, grids = uniforms[:, :_NUM_PARAMS], uniforms[:, _NUM_PARAMS:].view(num, 2, _GRID * _GRID)
    size = 3 * height * width
    bank = _noise_bank(size)
    noise = bank.unfold(0, size, 1)[(params[:, 34] * _NOISE_SPAN).long()]  # one window per sample
    return params, grids, noise.view(num, 3, height, width)


# --- vectorised rendering (only exactly rounded ops: + - * / sqrt floor min max) -------------
def _unit(a, b):
    """A unit 2-D direction from two uniforms, without trigonometry."""
    x, y = 2 * a - 1, 2 * b - 1
    n = (x * x + y * y).clamp_min(1e-6).sqrt()
    return x / n, y / n


def _value_noise(grid, px, py):
    """Smooth periodic value noise in [0, 1]; ``grid`` [m, G*G], ``px``/``py`` broadcastable
    to [m, H, W], in lattice units."""
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = x0.long() & (_GRID - 1), (y0.long() & (_GRID - 1)) * _GRID
    ix1, iy1 = (ix + 1) & (_GRID - 1), (iy + _GRID) & (_GRID * _GRID - 1)
    m = grid.shape[0]
    shape = torch.broadcast_shapes(px.shape, py.shape, (m, 1, 1))

    def at(yy, xx):
        return torch.gather(grid, 1, (yy + xx).expand(shape).reshape(m, -1)).view(shape)

    top = at(iy, ix) + (at(iy, ix1) - at(iy, ix)) * fx
    bottom = at(iy1, ix) + (at(iy1, ix1) - at(iy1, ix)) * fx
    return top + (bottom - top) * fy


def _scene_params(params: torch.Tensor, half_width: float) -> dict:
    """Map uniforms [N, P] to named scene parameters, objects sorted far to near."""
    u = params[:, :_SCENE_PARAMS]
    p = {
        "horizon": 0.22 + 0.26 * u[:, 0],
        "focal": 0.9 + 0.35 * u[:, 2],
        "n_obj": (1 + (u[:, 3] * MAX_OBJECTS).long()).clamp_max(MAX_OBJECTS),
        "light": _unit(u[:, 10], u[:, 11]),
        "tex_kind": (u[:, 12] * 3).long().clamp_max(2),
        "tex_dir": _unit(u[:, 13], u[:, 14]),
        "tex_period": 0.25 + 0.9 * u[:, 15],
        "tex_phase": 4 * u[:, 16],
        "ground_a": 0.1 + 0.8 * u[:, 17:20],
        "ground_b": 0.1 + 0.8 * u[:, 20:23],
        "sky_top": 0.3 + 0.7 * u[:, 23:26],
        "sky_bottom": 0.5 + 0.5 * u[:, 26:29],
        "visibility": 6.0 + 20.0 * u[:, 29],
        "sigma": (0.01 + 0.04 * u[:, 30]) * torch.where(u[:, 36] < 0.5, -1.0, 1.0),
        "brightness": 0.16 * (u[:, 31] - 0.5),
        "contrast": 0.8 + 0.35 * u[:, 32],
        "tex_contrast": 0.3 + 0.7 * u[:, 33],
    }
    p["fh"] = p["focal"] * (1.0 + 0.6 * u[:, 1])  # focal length x camera height
    o = params[:, _SCENE_PARAMS:].view(-1, MAX_OBJECTS, _OBJ_PARAMS)
    fh, horizon, focal = p["fh"][:, None], p["horizon"][:, None], p["focal"][:, None]
    classes = torch.argsort(u[:, 4:10], dim=1, stable=True)[:, :MAX_OBJECTS]  # distinct classes
    # base row on the ground, near enough that the object is at most 0.9 * MAX_DEPTH away
    lo = horizon + torch.clamp(fh / (0.9 * MAX_DEPTH), min=0.08)
    base = lo + (1.03 - lo) * o[..., 0]
    z = fh / (base - horizon)  # ground depth at the base row
    radius = focal * (0.35 + 0.45 * o[..., 2]) / z * torch.tensor(_CLASS_SCALE)[classes]
    # The nearest object is the scene's subject: clearly the largest, so the image-level class is
    # well defined; the others are smaller distractors (each at most 0.55x its radius).
    active = torch.arange(MAX_OBJECTS)[None, :] < p["n_obj"][:, None]
    hero = torch.where(active, base, -1.0).argmax(dim=1, keepdim=True)  # [N, 1]
    is_hero = torch.zeros_like(active).scatter_(1, hero, True)
    hero_r = (radius.gather(1, hero) * 1.7).clamp(0.16, 0.4)
    radius = torch.where(is_hero, hero_r, torch.minimum(0.8 * radius, 0.55 * hero_r).clamp(min=0.05))
    colour = o[..., 4:7]
    ground_mean = ((p["ground_a"] + p["ground_b"]) / 2)[:, None, :]
    colour = torch.where((colour - ground_mean).abs().sum(-1, keepdim=True) < 0.45, 1 - colour, colour)
    cos, sin = _unit(torch.ones_like(o[..., 3]), 0.5 + 0.225 * (2 * o[..., 3] - 1))  # +-24 degrees
    obj = {
        "cx": torch.where(active, (2 * o[..., 1] - 1) * (0.9 * half_width), 1e4),  # inactive: far off
        "cy": base - radius,  # standing on the ground: the shape's circle touches the base row
        "base": base,
        "z": z,
        "radius": radius,
        "world_r": radius * z / focal,
        "a": cos / radius,
        "b": sin / radius,
        "shade": 0.15 + 0.25 * o[..., 7],
        "classes": classes,
        "active": active,
    }
    order = torch.argsort(torch.where(active, z, 1e9), dim=1, descending=True, stable=True)
    p.update({k: v.gather(1, order) for k, v in obj.items()})
    p["colour"] = colour.gather(1, order[..., None].expand(-1, -1, 3))
    return p


def _ground_weight(kind: int, p: dict, idx, xs, gz):
    """Texture pattern in [0, 1] on ground coordinates (metres) for the samples ``idx``."""
    col = lambda t: t[idx].view(-1, 1, 1)  # noqa: E731
    gz = gz[idx]
    scale = gz / (col(p["focal"]) * col(p["tex_period"]))  # image x -> ground X / period
    if kind == 0:  # stripes
        s = xs * (scale * col(p["tex_dir"][0])) + (gz / col(p["tex_period"]) * col(p["tex_dir"][1]) + col(p["tex_phase"]))
        return ((s - s.floor()) < 0.5).float()
    if kind == 1:  # checker
        s = (xs * scale + col(p["tex_phase"])).floor() + (gz / col(p["tex_period"])).floor()
        return (s.long() & 1).float()
    return _value_noise(p["grids"][idx, 0], xs * (1.5 * scale) + 17.0, gz / col(p["tex_period"]) * 1.5)


def _render_chunk(seed: int, start: int, num: int, height: int, width: int, appearance: int | None = None) -> dict[str, torch.Tensor]:
    params, grids, noise = _draw(num, seed, start, height, width, appearance)
    half_width = width / (2 * height)
    p = _scene_params(params, half_width)
    p["grids"] = grids
    n = num
    ys = ((torch.arange(height, dtype=torch.float32) + 0.5) / height).view(1, height, 1)
    xs = ((torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / height).view(1, 1, width)
    col = lambda t: t.reshape(-1, 1, 1)  # noqa: E731  [n] -> [n, 1, 1]
    rgb = lambda t: t.reshape(-1, 3, 1, 1)  # noqa: E731  [n, 3] -> [n, 3, 1, 1]

    # ground plane (depth per row) and sky; colours are accumulated as sum_t colour_t * field_t
    below = ys - col(p["horizon"])  # [n, H, 1]
    ground = (below > 0).float()
    gz = torch.where(below > 0, col(p["fh"]) / below.clamp_min(1e-6), MAX_DEPTH).clamp_max(MAX_DEPTH)
    weight = torch.empty(n, height, width)
    for kind in range(3):
        idx = (p["tex_kind"] == kind).nonzero().squeeze(1)
        if idx.numel():
            weight[idx] = _ground_weight(kind, p, idx, xs, gz)
    tc = col(p["tex_contrast"])
    weight = weight * tc + (0.5 - 0.5 * tc)
    shadow = torch.zeros(n, height, width)
    for j in range(MAX_OBJECTS):  # soft contact shadows around each base point
        r = col(p["radius"][:, j])
        qx, qy = (xs - col(p["cx"][:, j])) / (1.2 * r), (ys - col(p["base"][:, j])) / (0.22 * r)
        shadow = torch.maximum(shadow, 1 - (qx * qx + qy * qy))
    vis = col(p["visibility"])
    haze = 0.85 * gz / (gz + vis)  # [n, H, 1] atmospheric perspective
    gain = (1 - 0.45 * shadow.clamp_min(0)) * ((1 - haze) * ground)  # zero on sky rows
    sky_t = (ys / col(p["horizon"])).clamp_max(1)
    sky_top = (1 - ground) * (1 - sky_t)  # [n, H, 1]
    sky_bottom = (1 - ground) * sky_t + ground * haze
    rows = min(height, math.ceil(float(p["horizon"].max()) * height) + 1) if n else 0
    clouds = torch.zeros(n, height, width)
    clouds[:, :rows] = (_value_noise(grids[:, 1], xs * 5 + 3.0, ys[:, :rows] * 9) - 0.5) * (1 - ground[:, :rows])

    # objects, near to far: `remaining` is 1 where nothing nearer covers the pixel yet
    remaining = torch.ones(n, height, width)
    mask, depth, obj_haze = torch.zeros(n, height, width), torch.zeros(n, height, width), torch.zeros(n, height, width)
    lx, ly = (col(t) for t in p["light"])
    terms, areas_by_slot = [], []
    for j in reversed(range(MAX_OBJECTS)):
        r2 = col(p["radius"][:, j]) ** 2
        a, b = col(p["a"][:, j]), col(p["b"][:, j])
        dx, dy = xs - col(p["cx"][:, j]), ys - col(p["cy"][:, j])  # [n, 1, W], [n, H, 1]
        rr = dx * dx / r2 + dy * dy / r2
        margin = torch.empty(n, height, width)
        for k in range(NUM_CLASSES):
            idx = (p["classes"][:, j] == k).nonzero().squeeze(1)
            if idx.numel() == n:
                margin = _margin(k, dx, dy, a, b, rr)
            elif idx.numel():
                margin[idx] = _margin(k, dx[idx], dy[idx], a[idx], b[idx], rr[idx])
        # exact 0/1 coverage without a slow bool round trip (|margin| is 0 or >> 1e-30)
        seen = (margin * 1e30 + 1).clamp(0, 1) * remaining
        remaining = remaining - seen
        areas_by_slot.append(seen.sum((1, 2)))  # exact: sums of 0/1 below 2**24
        dome = (1 - rr).clamp_min(0)  # paraboloid bulge: 1 at the centre, 0 on the rim
        sh = col(p["shade"][:, j])
        shade = dx * (sh * (a * lx - b * ly)) + (dy * (sh * (b * lx + a * ly)) + 0.82) + dome * 0.12
        z = col(p["z"][:, j])
        hz = 0.85 * z / (z + vis)
        terms.append((p["colour"][:, j] * (1 - hz).view(-1, 1), shade * seen))
        obj_haze = obj_haze + seen * hz
        mask = mask + seen * col(p["classes"][:, j] + 1).float()
        depth = depth + (z - dome * col(0.15 * p["world_r"][:, j])) * seen
    depth = depth + remaining * gz

    # compose colours, with photometric jitter (contrast folded into the colours) and noise
    c = p["contrast"].view(-1, 1)
    ground_gain = remaining * gain
    terms += [
        (p["ground_a"], ground_gain),
        (p["ground_b"] - p["ground_a"], ground_gain * weight),
        (p["sky_top"], remaining * sky_top),
        (p["sky_bottom"], remaining * sky_bottom + obj_haze),
    ]
    image = (0.5 - 0.5 * c + p["brightness"].view(-1, 1)).view(-1, 1, 1, 1) + (remaining * clouds * (0.15 * col(p["contrast"])))[:, None]
    for colour, field in terms:
        image = image + rgb(colour * c) * field[:, None]
    image = (image + noise * col(p["sigma"])[:, None]).clamp(0, 1)

    # visible area per object; classes within a scene are distinct, so this is per class too
    areas = torch.zeros(n, NUM_CLASSES).scatter_(1, p["classes"], torch.stack(areas_by_slot[::-1], 1))
    nearest = p["classes"][:, -1]  # drawn last: the nearest object, always active
    labels = torch.where(areas.sum(1) > 0, areas.argmax(1), nearest)
    mask = mask.long()
    return {"pixel_values": image, "labels": labels, "mask": mask, "depth": depth}


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height < 8 or width < 8:
        raise ValueError(f"image_size must be at least 8 pixels per side, got {image_size!r}")
    return int(height), int(width)


_CHUNK_PIXELS = 96 * 64 * 64  # keeps the working set of one chunk in cache


def render_scenes(
    num: int, image_size: int | tuple[int, int] = 64, seed: int = 0, start: int = 0, appearance: int | None = None
) -> dict[str, torch.Tensor]:
    """Render samples ``start .. start + num - 1`` of the ShapesWorld stream for ``seed``.

    Each sample depends only on ``(seed, index)``, so any slice is reproducible independently
    of batching. ``image_size`` is ``S`` or ``(H, W)``.

    ``appearance`` (an int) renders the same scenes with their appearance redrawn: geometry
    (camera, classes, places, sizes, tilts), hence ``labels``, ``mask`` and ``depth``, stay those
    of ``(seed, index)``, while colours, textures, sky, lighting, haze and noise come from
    ``(seed, index, appearance)``. Two values give two views of one scene that share only its
    shapes, a label-free pair for self-supervised pretraining (``None``: the scene's own look).

    Returns ``pixel_values`` float32 ``[N, 3, H, W]`` in ``[0, 1]``; ``labels`` int64 ``[N]``
    (class of the largest visible object); ``mask`` int64 ``[N, H, W]`` (0 = background, class
    ``k`` -> ``k + 1``); ``depth`` float32 ``[N, H, W]`` in metres, in ``(0, MAX_DEPTH]``.
    """
    if num < 0 or start < 0:
        raise ValueError(f"num and start must be >= 0, got num={num}, start={start}")
    height, width = _size(image_size)
    out = {
        "pixel_values": torch.empty(num, 3, height, width),
        "labels": torch.empty(num, dtype=torch.long),
        "mask": torch.empty(num, height, width, dtype=torch.long),
        "depth": torch.empty(num, height, width),
    }
    chunk = max(1, _CHUNK_PIXELS // (height * width))
    for begin in range(0, num, chunk):
        part = _render_chunk(seed, start + begin, min(chunk, num - begin), height, width, appearance)
        for key, value in part.items():
            out[key][begin : begin + value.shape[0]] = value
    return out


def make_shapes_dataset(num_samples: int, image_size: int | tuple[int, int] = 64, seed: int = 0, split: str = "train"):
    """ShapesWorld as a ``datasets.Dataset`` with columns ``image`` (RGB), ``label``
    (``ClassLabel`` over ``SHAPE_CLASSES``), ``mask`` (mode ``L`` image, 0 = background) and
    ``depth`` (``Array2D`` float32, metres).

    ``train`` / ``validation`` / ``test`` draw from disjoint streams derived from ``(seed, split)``.
    """
    import datasets
    from PIL import Image

    seed = split_seed(split, seed)  # raises on an unknown split
    height, width = _size(image_size)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(SHAPE_CLASSES)),
            "mask": datasets.Image(),
            "depth": datasets.Array2D(shape=(height, width), dtype="float32"),
        }
    )
    batch = render_scenes(num_samples, (height, width), seed=seed)
    pixels = (batch["pixel_values"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    columns = {
        "image": [Image.fromarray(a, mode="RGB") for a in pixels],
        "label": batch["labels"].tolist(),
        "mask": [Image.fromarray(m, mode="L") for m in batch["mask"].to(torch.uint8).numpy()],
        "depth": list(batch["depth"].numpy()),
    }
    return datasets.Dataset.from_dict(columns, features=features, split=datasets.NamedSplit(split))
