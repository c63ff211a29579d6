"""Pretrained models: the registry (one row per model, sources, checksums, cache) and safe
loading helpers.

Importing this package is cheap: torch loads only inside the loading functions and factories.
"""

from zeropath.models.cache import digest, home, models_dir, sha256_file, verify
from zeropath.models.registry import (
    Cache,
    HuggingFace,
    LocalPath,
    ModelSpec,
    PyPIMember,
    Url,
    cache_location,
    cached_path,
    fetch,
    get_encoder,
    get_segmenter,
    get_spec,
    is_cached,
    list_specs,
    load_state_dict,
    load_torchscript,
    provenance,
    register_model,
    resolve,
    rows,
    unregister_model,
)

__all__ = [
    "Cache",
    "HuggingFace",
    "LocalPath",
    "ModelSpec",
    "PyPIMember",
    "Url",
    "cache_location",
    "cached_path",
    "digest",
    "fetch",
    "get_encoder",
    "get_segmenter",
    "get_spec",
    "home",
    "is_cached",
    "list_specs",
    "load_state_dict",
    "load_torchscript",
    "models_dir",
    "provenance",
    "register_model",
    "resolve",
    "rows",
    "sha256_file",
    "unregister_model",
    "verify",
]
