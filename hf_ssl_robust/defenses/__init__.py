"""Defenses that make encoders more robust: DeACL adversarial fine-tuning.

    >>> from hf_ssl_robust.defenses import DeACLConfig, train_deacl
    >>> path = train_deacl(DeACLConfig(encoder="dino-vitb16", dataset="shapes", max_steps=1000))
"""

from .deacl import DeACLConfig, deacl_loss, train_deacl

__all__ = ["DeACLConfig", "deacl_loss", "train_deacl"]
