"""hf_ssl_robust: adversarial robustness of self-supervised vision encoders, across tasks."""

__version__ = "0.1.0"

from .encoders import EncoderNotFoundError, EncoderOutput, PixelEncoder, load_encoder

__all__ = ["EncoderNotFoundError", "EncoderOutput", "PixelEncoder", "load_encoder", "__version__"]
