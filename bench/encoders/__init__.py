"""Image encoders and the on-disk CLS token cache shared by SAE-Rad and the NN baseline."""

from bench.encoders.cache import TokenCache, parse_shard, shard_of
from bench.encoders.encode import EncodeReport, encode_dataset, load_tokens, read_image
from bench.encoders.loader import (DEFAULT_ENCODER, PHANTOM_ALIAS, PHANTOM_ENCODER_DIR, Encoder,
                                   fingerprint_model_dir, load_encoder)
from bench.encoders.probe import probe_auroc

__all__ = [
    "DEFAULT_ENCODER", "PHANTOM_ALIAS", "PHANTOM_ENCODER_DIR", "EncodeReport", "Encoder",
    "TokenCache", "encode_dataset", "fingerprint_model_dir", "load_encoder", "load_tokens",
    "parse_shard", "probe_auroc", "read_image", "shard_of",
]
