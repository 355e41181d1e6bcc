"""hf_ssl_robust: adversarial robustness of self-supervised vision encoders, across tasks."""

__version__ = "0.1.0"

from . import heads  # noqa: F401  (registers the heads with the transformers Auto classes)
from .attacks import ATTACKS, Attack, AttackResult, make_attack
from .encoders import EncoderNotFoundError, EncoderOutput, PixelEncoder, load_encoder
from .heads import HEADS, SSLForDepthEstimation, SSLForImageClassification, SSLForSemanticSegmentation

__all__ = [
    "ATTACKS",
    "HEADS",
    "Attack",
    "AttackResult",
    "EncoderNotFoundError",
    "EncoderOutput",
    "PixelEncoder",
    "SSLForDepthEstimation",
    "SSLForImageClassification",
    "SSLForSemanticSegmentation",
    "__version__",
    "load_encoder",
    "make_attack",
]
