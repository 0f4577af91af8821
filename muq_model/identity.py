"""How a library identifies a model: the name it records and the vectors the model makes; and how
anything identifies a file: the SHA-256 of its bytes.

Kept free of torch so the catalog and the CLI can use it without loading a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def canonical_model_name(name: str) -> str:
    """The name a library records for a model: a local directory as its absolute path, so that any
    working folder finds it again; a hub id as it is."""
    expanded = os.path.expanduser(str(name))
    return os.path.abspath(expanded) if os.path.isdir(expanded) else str(name)


VECTOR_SPACE_FIELDS = ("config_hash", "weights_hash", "clip_policy")

# Which precision modes (muq_model.runtime.PRECISIONS) make interchangeable vectors: those whose every
# clip vector has cosine >= 0.9999 to fp32's share fp32's space (README "Precision modes" has the
# measurements); the others get a space of their own, so a library never mixes them silently.
# A fingerprint without "precision" predates the modes and was made in fp32.
PRECISION_VECTOR_SPACES = {"fp32": "fp32", "tf32": "fp32", "bf16": "bf16", "int8": "int8"}
# A precision's numerics changed in place make other vectors from the same weights: each change bumps its
# version, recorded in the fingerprint, so a library made before it is not extended with vectors made after.
# A fingerprint without "numerics_version" has version 1. int8: 2 = the Conv2d stem is quantised too.
NUMERICS_VERSIONS = {"int8": 2}


def vector_space(fingerprint: dict) -> str:
    """The part of a fingerprint that decides which vectors a model makes, as a stable string key.

    `model_id` (the name the model was loaded by) is provenance only: the same weights loaded from a
    moved directory or from the hub cache make the same vectors and may share a library."""
    missing = [k for k in VECTOR_SPACE_FIELDS if k not in fingerprint]
    if missing:
        raise ValueError(f"model fingerprint lacks {missing}: {fingerprint}")
    precision = made_in_precision(fingerprint)
    if precision not in PRECISION_VECTOR_SPACES:
        raise ValueError(f"model fingerprint has an unknown precision {precision!r}: {fingerprint}")
    key = {k: fingerprint[k] for k in VECTOR_SPACE_FIELDS}
    if PRECISION_VECTOR_SPACES[precision] != "fp32":  # fp32's key stays as it was before precision modes
        key["numerics"] = PRECISION_VECTOR_SPACES[precision]
        if fingerprint.get("numerics_version", 1) != 1:
            key["numerics_version"] = fingerprint["numerics_version"]
    return json.dumps(key, sort_keys=True)


def made_in_precision(fingerprint: dict) -> str:
    """The precision mode a fingerprint's vectors were computed in."""
    return fingerprint.get("precision", "fp32")


def precision_conflict(stored: dict | None, precision: str) -> str | None:
    """Why vectors computed in `precision` may not join a library whose vectors have fingerprint `stored`
    (None when they may, or when the library has none yet): one sentence naming both precisions."""
    if stored is None:
        return None
    made = made_in_precision(stored)
    if PRECISION_VECTOR_SPACES.get(made) == PRECISION_VECTOR_SPACES.get(precision):
        version, current = stored.get("numerics_version", 1), NUMERICS_VERSIONS.get(precision, 1)
        if made == precision and version != current:
            return (f"This library's vectors were made in precision {made} by another implementation of it "
                    f"(numerics version {version}; this one is version {current}), whose vectors differ slightly; "
                    f"they are never mixed: index the music again into a new --library, or use --precision fp32 "
                    f"with a library indexed in fp32")
        return None
    return (f"This library's vectors were made in precision {made}, but this model computes in precision "
            f"{precision}; vectors of different precisions are never mixed: pass --precision {made}, or use "
            f"another --library for {precision} vectors")


def same_vectors(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints make the same vectors; a missing or incomplete one never does."""
    try:
        return a is not None and b is not None and vector_space(a) == vector_space(b)
    except ValueError:
        return False


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks so a large file costs no memory."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
