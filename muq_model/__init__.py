"""MuQ and MuQ-MuLan in plain PyTorch: configs, model parts, checkpoint I/O, the embedding API and the
MuQ encoder with its self-supervised pretraining pieces (Mel-RVQ, masked-token prediction).

Names are imported lazily so that `import muq_model.commands` (CLI help) does not load torch.
"""

import importlib

_EXPORTS = {
    "ClipEmbeddings": "muq_model.clips",
    "ClipPolicy": "muq_model.clips",
    "ModalModelConfig": "muq_model.config",
    "MuLanConfig": "muq_model.config",
    "MuLanTransformerConfig": "muq_model.config",
    "MuQConfig": "muq_model.config",
    "MuQMuLanConfig": "muq_model.config",
    "MuQMuLan": "muq_model.model",
    "TokenizerMissingError": "muq_model.model",
    "vector_space": "muq_model.identity",
    "canonical_model_name": "muq_model.identity",
    "CheckpointError": "muq_model.checkpoint",
    "MuQ": "muq_model.encoder",
    "SSLConfig": "muq_model.encoder",
    "RVQConfig": "muq_model.rvq",
    "ResidualVectorQuantizer": "muq_model.rvq",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'muq_model' has no attribute {name!r}")
