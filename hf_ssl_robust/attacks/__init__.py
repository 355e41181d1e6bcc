"""Adversarial attacks: one registry, one projected-gradient loop, one small file per objective.

    >>> from hf_ssl_robust.attacks import make_attack
    >>> result = make_attack("embed", eps=8 / 255, tokens="cls", seed=0).perturb(encoder, pixels)

Every module in this package is imported below, so a new attack is one file that ends in
`@register_attack("name")`.
"""

import importlib
import pkgutil

from .base import ATTACKS, Attack, AttackResult, image_seeds, make_attack, mix_seed, projected_gradient_ascent, register_attack

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .apgd import APGD  # noqa: E402
from .apgd_targeted import APGDT  # noqa: E402
from .depth_pgd import DepthPGD  # noqa: E402
from .embed import EmbedAttack  # noqa: E402
from .pgd import PGD  # noqa: E402
from .segpgd import SegPGD  # noqa: E402
from .square import Square  # noqa: E402

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "Attack",
    "AttackResult",
    "DepthPGD",
    "EmbedAttack",
    "PGD",
    "SegPGD",
    "Square",
    "image_seeds",
    "make_attack",
    "mix_seed",
    "projected_gradient_ascent",
    "register_attack",
]
