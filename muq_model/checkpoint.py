"""Checkpoint I/O: find files (hub cache or directory), map official keys onto ours, load strictly,
resolve the tokenizer, and write self-contained directories.

Checkpoints use the official key names (`mulan.audio.model.model.conv...`), in `pytorch_model.bin`
(read with torch.load(weights_only=True)) or `model.safetensors`; `save_pretrained` writes the same
names, so a converted directory also stays loadable by the official package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from pathlib import Path

import torch

from muq_model.config import MuQMuLanConfig
from muq_model.identity import file_sha256
from muq_model.spelling import CAPTION_WORDS_FILE, read_caption_words, write_caption_words

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model", "vocab.txt",
)

# Checkpoint tensors with no role at inference (spec Q-W1..Q-W3): dead modules, recomputed buffers,
# both weight-norm spellings of the unused pos_conv_embed, optional position ids. Nothing else is skipped.
IGNORED_KEYS = tuple(re.compile(p) for p in (
    r"mulan\.audio\.model\.model\.linear\.(weight|bias)",  # SSL prediction head
    r"mulan\.audio\.model\.model\.cls_token",
    r"mulan\.audio\.model\.model\.conformer\.pos_conv_embed\.conv\."
    r"(bias|weight_g|weight_v|parametrizations\.weight\.original[01])",
    r"mulan\.audio\.model\.model\.conformer\.embed_positions\.inv_freq",  # recomputed from rotary_base
    r"mulan\.audio\.model\.model\.rvq\..+",  # Mel-RVQ target quantiser
    r"mulan\.audio\.model\.model\.quantizer_melspec_2048\..+",  # random-projection target quantiser
    r"mulan\.audio\.aggregator\.(weight|bias)",
    r"mulan\.text\.model\.pooler\.dense\.(weight|bias)",
    r"mulan\.text\.model\.embeddings\.(position_ids|token_type_ids)",
    r"mulan\.contrast\..+",  # learned temperature (and sigmoid bias): training only
))


class CheckpointError(ValueError):
    """A checkpoint that does not match the architecture, is unreadable, or cannot be found."""


# ---- key mapping (the one place that knows both naming schemes) --------------------------------------

def official_key(ours: str) -> str:
    """Our state_dict key -> the official MuQ-MuLan key."""
    if ours.startswith("audio.model."):
        return "mulan.audio.model.model." + ours[len("audio.model."):]
    return "mulan." + ours


def our_key(official: str) -> str | None:
    """Official key -> ours; None for keys in IGNORED_KEYS."""
    if any(p.fullmatch(official) for p in IGNORED_KEYS):
        return None
    if not official.startswith("mulan."):
        return official  # reported as unexpected by the strict check
    rest = official[len("mulan."):]
    if rest.startswith("audio.model.model."):
        return "audio.model." + rest[len("audio.model.model."):]
    return rest


def map_official_state_dict(model, state: dict, *, skip_text_encoder: bool = False) -> dict:
    """Rename and check: every non-ignored key must exist in the model with the same shape, and every
    model tensor must be present. Raises CheckpointError naming the offending keys."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if skip_text_encoder:
        expected = {k: s for k, s in expected.items() if not k.startswith("text.model.")}
    return match_state_dict(expected, state, our_key, official_key)


def match_state_dict(expected: dict, state: dict, to_ours, to_official) -> dict:
    """The checkpoint's tensors under our names, checked against `expected` ({our key: shape}): `to_ours`
    maps a checkpoint key to ours (None = ignored), `to_official` names a missing key in the error."""
    mapped, seen, unexpected, wrong_shape = {}, set(), [], []
    for key, tensor in state.items():
        ours = to_ours(key)
        if ours is None:
            continue
        seen.add(ours)
        if ours not in expected:
            unexpected.append(key)
        elif tuple(tensor.shape) != tuple(expected[ours]):
            wrong_shape.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[ours])}")
        else:
            mapped[ours] = tensor
    missing = [to_official(k) for k in expected if k not in seen]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches: {_preview(wrong_shape)}")
    if problems:
        raise CheckpointError("checkpoint does not match the model architecture: " + "; ".join(problems))
    return mapped


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ---- files ---------------------------------------------------------------------------------------------

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or a .bin file; .bin is read with weights_only=True (no unpickling of
    arbitrary objects). Each tensor is in memory aligned as a fresh one is: a tensor read from a file can sit
    at any byte offset, and CPU kernels round differently at different alignments, so a loaded model would
    make vectors an ulp away from the same model before saving."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle with non-tensor objects
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a flat mapping of names to tensors")
    for key, tensor in state.items():
        if tensor.data_ptr() % 64:
            state[key] = tensor.clone()
    return state


def weights_file(directory: Path) -> Path:
    for name in (SAFETENSORS_FILE, BIN_FILE):
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"no {SAFETENSORS_FILE} or {BIN_FILE} in {directory}")


def read_config(directory: Path) -> MuQMuLanConfig:
    import json

    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return MuQMuLanConfig.from_dict(data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _looks_like_repo_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None or re.fullmatch(r"[\w.-]+", name) is not None


def resolve_source(name_or_path: str | Path, *, allow_patterns: list[str] | None = None) -> Path:
    """A local directory for a path, a "pkg:<package>/<subdir>" source, or a hub id (through the
    huggingface_hub cache; honours HF_HUB_OFFLINE, never downloads when offline)."""
    text = str(name_or_path)
    if text.startswith("pkg:"):
        package, _, subdir = text[4:].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"source {text!r}: Python package {package!r} is not installed")
        directory = Path(next(iter(spec.submodule_search_locations))) / subdir
        if not directory.is_dir():
            raise CheckpointError(f"source {text!r}: {directory} does not exist")
        return directory
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; give the directory that holds {CONFIG_FILE} and the weights")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not _looks_like_repo_id(text):
        raise CheckpointError(f"model directory {path} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(text, allow_patterns=allow_patterns, local_files_only=offline))
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"{text!r} is not in the Hugging Face cache and the hub is not reachable"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download it on a connected machine with "
            f"`muqsearch model download {text} DIR` and pass DIR."
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"cannot fetch {text!r} from the Hugging Face hub: {type(exc).__name__}: {exc}") from exc


MODEL_PATTERNS = [CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE, *TOKENIZER_FILES, CAPTION_WORDS_FILE]


# ---- tokenizer ---------------------------------------------------------------------------------------

def _has_tokenizer_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt"))


def load_tokenizer(source):
    """A transformers tokenizer from a directory path / hub id (cache only), or the object itself."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from transformers import AutoTokenizer

    directory = resolve_source(source, allow_patterns=list(TOKENIZER_FILES) + [CONFIG_FILE])
    if not _has_tokenizer_files(directory):
        raise CheckpointError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {directory}")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def find_tokenizer(config: MuQMuLanConfig, model_dir: Path | None = None):
    """Model directory first, then the text encoder's named source (a pkg: source or the hub cache).
    Returns None (with a log line) when nothing is available offline."""
    if model_dir is not None and _has_tokenizer_files(model_dir):
        return load_tokenizer(model_dir)
    name = config.text_model.name
    try:
        if name.startswith("pkg:") or Path(name).expanduser().is_dir():
            return load_tokenizer(name)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # not cached / not installed: audio still works
        logger.info("no tokenizer for %r available offline (%s); embed_text will raise", name, exc)
        return None


# ---- external text-encoder weights ------------------------------------------------------------------

def load_external_text_encoder(model, config: MuQMuLanConfig) -> None:
    """Fill model.text.model from the named source of `text_model.external_weights` (see config docs)."""
    source = config.text_model.name
    directory = resolve_source(source, allow_patterns=[SAFETENSORS_FILE, BIN_FILE, CONFIG_FILE])
    path = weights_file(directory)
    expected = config.text_model.weights_sha256
    if expected and file_sha256(path) != expected:
        raise CheckpointError(
            f"text encoder weights {path} (from {source!r}) have SHA-256 {file_sha256(path)}, "
            f"but the model config expects {expected}"
        )
    encoder = model.text.model
    state = read_state_dict(path)
    prefix = encoder.base_model_prefix + "."
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items()
             if not k.startswith("pooler.") and k not in ("embeddings.position_ids", "embeddings.token_type_ids")}
    result = encoder.load_state_dict(state, strict=False, assign=True)  # assign: also fills a meta-device encoder
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"text encoder weights {path} do not match text_model.hf_config: "
            f"missing {_preview(result.missing_keys)}; unexpected {_preview(result.unexpected_keys)}"
        )


# ---- load / save --------------------------------------------------------------------------------------

def load_pretrained(cls, name_or_path, *, tokenizer=None, device=None, dtype=None, official_compat=True):
    directory = resolve_source(name_or_path, allow_patterns=MODEL_PATTERNS)
    config = read_config(directory)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else find_tokenizer(config, directory)
    external = config.text_model.external_weights
    # Build without random init (meta tensors), then take the checkpoint tensors as the parameters.
    with torch.device("meta"):
        model = cls(config, tokenizer=tok, official_compat=official_compat)
    if external:
        load_external_text_encoder(model, config)
    state = map_official_state_dict(model, read_state_dict(weights_file(directory)), skip_text_encoder=external)
    model.load_state_dict(state, strict=not external, assign=True)
    model.model_id = str(name_or_path)
    model.caption_words = read_caption_words(directory)
    model.eval().float()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def save_pretrained(model, directory) -> Path:
    """config.json + model.safetensors (official key names) + tokenizer files: a directory that loads
    with no network. Text-encoder weights with `external_weights` are not written."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    external = model.config.text_model.external_weights
    state = {
        official_key(k): v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
        if not (external and k.startswith("text.model."))
    }
    tmp = directory / (SAFETENSORS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / SAFETENSORS_FILE)
    (directory / CONFIG_FILE).write_text(model.config.to_json())
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))
    if model.caption_words:
        write_caption_words(directory, model.caption_words)
    return directory


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous().reshape(-1)
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ---- the standalone MuQ encoder (OpenMuQ/MuQ-large-msd-iter layout) ------------------------------------

# Dead tensors of the official MuQ checkpoint that are not built here: HF's never-called pos_conv_embed
# (both weight-norm spellings) and the rotary frequencies, which are recomputed. Nothing else is skipped.
MUQ_IGNORED_KEYS = tuple(re.compile(p) for p in (
    r"model\.conformer\.pos_conv_embed\.conv\.(bias|weight_g|weight_v|parametrizations\.weight\.original[01])",
    r"model\.conformer\.embed_positions\.inv_freq",
))
# Weight norm saved by torch's newer parametrisation API -> the older names this model (and the official
# rvq module) uses.
_PARAMETRIZED = re.compile(r"(.+)\.parametrizations\.weight\.original([01])")


def muq_key(official: str) -> str | None:
    """Official MuQ key -> ours (the same name but for the weight-norm spelling); None when ignored."""
    if any(p.fullmatch(official) for p in MUQ_IGNORED_KEYS):
        return None
    match = _PARAMETRIZED.fullmatch(official)
    if match:
        return f"{match[1]}.{('weight_g', 'weight_v')[int(match[2])]}"
    return official


# Tensors of a standalone MuQ that only its pretraining uses (prediction head, unused cls_token, target
# quantisers, reconstruction head); a MuQ-MuLan audio tower has no place for them.
MUQ_SSL_ONLY_KEYS = re.compile(r"model\.(linear\.(weight|bias)|cls_token|rvq\..+|quantizer_melspec_2048\..+|recon_proj\..+)")
# MuQConfig fields that do not shape the encoder's computation: the head and target sizes, and dropout
# (a training setting the MuLan config keeps its own value of).
MUQ_SSL_ONLY_FIELDS = ("codebook_size", "use_rvq_target", "dropout")


def muq_tower_key(official: str) -> str | None:
    """Official standalone MuQ key -> the key inside a MuQ-MuLan audio tower's MuQ (`model.audio.model`);
    None for dead and pretraining-only tensors. Keys outside `model.` come back as they are, so the strict
    check reports them as unexpected."""
    ours = muq_key(official)
    if ours is None or MUQ_SSL_ONLY_KEYS.fullmatch(ours):
        return None
    return ours[len("model."):] if ours.startswith("model.") else official


def load_muq_into_audio_tower(model, name_or_path) -> None:
    """Initialise a MuQ-MuLan's audio tower encoder from a standalone MuQ checkpoint (the output of
    `muqsearch pretrain`), as the paper trains MuQ first and MuLan on top. Strict: a config field that
    shapes the encoder differently, or a missing, unexpected or mis-shaped tensor, raises CheckpointError
    naming it; nothing is copied then."""
    import dataclasses

    directory = resolve_source(name_or_path, allow_patterns=[CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE])
    theirs, _ = read_muq_config(directory)
    ours = model.config.muq
    differ = [f"{f.name} is {getattr(theirs, f.name)!r} there but {getattr(ours, f.name)!r} in the model config"
              for f in dataclasses.fields(ours)
              if f.name not in MUQ_SSL_ONLY_FIELDS and getattr(theirs, f.name) != getattr(ours, f.name)]
    if differ:
        raise CheckpointError(f"MuQ {directory} has another architecture than the audio tower: " + "; ".join(differ))
    tower = model.audio.model
    expected = {k: v.shape for k, v in tower.state_dict().items()}
    state = match_state_dict(expected, read_state_dict(weights_file(directory)), muq_tower_key,
                             lambda k: "model." + k)
    tower.load_state_dict(state, strict=True)


def read_muq_config(directory: Path):
    import json

    from muq_model.encoder import read_official_config

    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}")
    try:
        return read_official_config(json.loads(path.read_text()), str(path))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc


def load_muq(cls, name_or_path, *, device=None):
    """A MuQ from an official-layout directory or hub id, loaded strictly (see match_state_dict)."""
    directory = resolve_source(name_or_path, allow_patterns=[CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE])
    config, ssl = read_muq_config(directory)
    with torch.device("meta"):
        model = cls(config, ssl)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = match_state_dict(expected, read_state_dict(weights_file(directory)), muq_key, lambda k: k)
    model.load_state_dict(state, strict=True, assign=True)
    model.model_id = str(name_or_path)
    model.eval().float()
    return model.to(device) if device is not None else model


def save_muq(model, directory) -> Path:
    """config.json (official layout) + model.safetensors (official key names)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = directory / (SAFETENSORS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / SAFETENSORS_FILE)
    (directory / CONFIG_FILE).write_text(model.config_json())
    return directory


def save_rvq(rvq, directory) -> Path:
    """A stand-alone quantiser (the MuQ-iter latent RVQ): config.json (RVQConfig) + model.safetensors
    with the official ResidualVectorQuantize key names (`quantizers.0.in_proj.weight_g`, ...)."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in rvq.state_dict().items()},
              str(directory / SAFETENSORS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(rvq.config), indent=2) + "\n")
    return directory


def load_rvq(directory):
    """The quantiser save_rvq wrote, loaded strictly."""
    import json

    from muq_model.rvq import ResidualVectorQuantizer, RVQConfig

    directory = Path(directory)
    try:
        config = RVQConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    except (OSError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: not an RVQ config ({exc})") from exc
    rvq = ResidualVectorQuantizer(config)
    expected = {k: v.shape for k, v in rvq.state_dict().items()}
    rvq.load_state_dict(match_state_dict(expected, read_state_dict(weights_file(directory)), muq_key, lambda k: k))
    return rvq.eval()
