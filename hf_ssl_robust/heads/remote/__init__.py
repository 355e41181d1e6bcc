"""Remote code written next to every saved head (see `modeling_ssl_heads.py`)."""
