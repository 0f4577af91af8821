"""How a library identifies a model: the name it records and the vectors the model makes.

Kept free of torch so the catalog and the CLI can use it without loading a model.
"""

from __future__ import annotations

import json
import os


def canonical_model_name(name: str) -> str:
    """The name a library records for a model: a local directory as its absolute path, so that any
    working folder finds it again; a hub id as it is."""
    expanded = os.path.expanduser(str(name))
    return os.path.abspath(expanded) if os.path.isdir(expanded) else str(name)


VECTOR_SPACE_FIELDS = ("config_hash", "weights_hash", "clip_policy")


def vector_space(fingerprint: dict) -> str:
    """The part of a fingerprint that decides which vectors a model makes, as a stable string key.

    `model_id` (the name the model was loaded by) is provenance only: the same weights loaded from a
    moved directory or from the hub cache make the same vectors and may share a library."""
    missing = [k for k in VECTOR_SPACE_FIELDS if k not in fingerprint]
    if missing:
        raise ValueError(f"model fingerprint lacks {missing}: {fingerprint}")
    return json.dumps({k: fingerprint[k] for k in VECTOR_SPACE_FIELDS}, sort_keys=True)


def same_vectors(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints make the same vectors; a missing or incomplete one never does."""
    try:
        return a is not None and b is not None and vector_space(a) == vector_space(b)
    except ValueError:
        return False
