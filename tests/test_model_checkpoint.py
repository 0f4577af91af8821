"""Checkpoint I/O: strict loading with the one ignore list, both weight-norm spellings, .bin through
weights_only, loud errors, tokenizer resolution, external text-encoder weights, the `model` CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from fixtures.official_common import LARGE_MULAN_CONFIG  # tests/ is on sys.path
from safetensors.torch import load_file, save_file

from app.cli import main
from muq_model import MuQMuLan, MuQMuLanConfig
from muq_model.checkpoint import CheckpointError, read_state_dict, resolve_source
from muq_model.config import MINILM_PACKAGE_SOURCE, XLM_ROBERTA_BASE
from muq_model.identity import file_sha256

OFFICIAL = Path(__file__).parent / "fixtures" / "official_tiny"
POS_CONV = "mulan.audio.model.model.conformer.pos_conv_embed.conv."


def wave(seconds=3.0, seed=0):
    return 0.1 * torch.randn(int(seconds * 24000), generator=torch.Generator().manual_seed(seed))


def copy_official(tmp_path: Path, state: dict | None = None, *, as_bin: bool = False) -> Path:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    shutil.copy(OFFICIAL / "config.json", directory / "config.json")
    state = load_file(str(OFFICIAL / "model.safetensors")) if state is None else state
    if as_bin:
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file(state, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def reference():
    return MuQMuLan.from_pretrained(OFFICIAL).embed_audio([wave()])


def test_bin_loads_with_old_weight_norm_names_and_position_ids(tmp_path, reference):
    state = load_file(str(OFFICIAL / "model.safetensors"))
    state[POS_CONV + "weight_g"] = state.pop(POS_CONV + "parametrizations.weight.original0")
    state[POS_CONV + "weight_v"] = state.pop(POS_CONV + "parametrizations.weight.original1")
    state["mulan.text.model.embeddings.position_ids"] = torch.arange(66)[None]
    model = MuQMuLan.from_pretrained(copy_official(tmp_path, state, as_bin=True))
    assert torch.equal(model.embed_audio([wave()]), reference)


def test_tensors_read_from_a_file_are_aligned_as_fresh_ones(tiny_model_dir):
    """CPU kernels round by alignment: a tensor left at its byte offset in the file made a reloaded model's
    vectors differ from the saved model's in the last bit (tests/test_mel_summary.py compares them bitwise)."""
    state = read_state_dict(tiny_model_dir / "model.safetensors")
    assert [k for k, tensor in state.items() if tensor.data_ptr() % 64] == []


def test_missing_key_is_named(tmp_path):
    state = load_file(str(OFFICIAL / "model.safetensors"))
    del state["mulan.text_to_latents.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing keys: mulan\.text_to_latents\.bias"):
        MuQMuLan.from_pretrained(copy_official(tmp_path, state))


def test_unexpected_key_is_named(tmp_path):
    state = load_file(str(OFFICIAL / "model.safetensors"))
    state["mulan.audio.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected keys: mulan\.audio\.extra\.weight"):
        MuQMuLan.from_pretrained(copy_official(tmp_path, state))


def test_shape_mismatch_is_named(tmp_path):
    config = json.loads((OFFICIAL / "config.json").read_text())
    config["mulan"]["dim_latent"] = 8
    directory = copy_official(tmp_path)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"4 shape mismatches: mulan\.audio_to_latents\.bias: checkpoint \(16,\) vs model \(8,\)"):
        MuQMuLan.from_pretrained(directory)


def test_corrupt_file_is_a_clear_error(tmp_path):
    directory = copy_official(tmp_path)
    (directory / "model.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*model.safetensors"):
        MuQMuLan.from_pretrained(directory)


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_bin_with_arbitrary_objects_is_refused(tmp_path):
    directory = copy_official(tmp_path)
    (directory / "model.safetensors").unlink()
    torch.save({"weights": torch.zeros(1), "payload": Payload()}, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        MuQMuLan.from_pretrained(directory)


def test_missing_directory_and_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        MuQMuLan.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        MuQMuLan.from_pretrained(tmp_path / "empty")


def test_uncached_hub_id_offline_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(CheckpointError, match="muqsearch model download"):
        resolve_source("OpenMuQ/MuQ-MuLan-large")


def test_official_config_json_reads_as_is():
    official = json.loads(json.dumps(LARGE_MULAN_CONFIG))  # the released MuQ-MuLan-large config.json
    config = MuQMuLanConfig.from_dict(official)
    assert config == MuQMuLanConfig.large()
    assert config.to_dict() == official  # round trip without extension fields
    assert config.muq.encoder_depth == 12 and config.muq.codebook_size == 8192
    assert config.text_encoder_config == XLM_ROBERTA_BASE


def test_fractional_clip_seconds_are_rejected():
    """Spec Q-M3, from config.json and from Python alike (int(7.5) would silently give 7 s clips)."""
    with pytest.raises(ValueError, match="mulan.clip_secs"):
        MuQMuLanConfig.from_dict({"mulan": {"clip_secs": 7.5}})
    config = MuQMuLanConfig.tiny()
    config.mulan.clip_secs = 7.5
    with pytest.raises(ValueError, match="mulan.clip_secs"):
        MuQMuLan(config, tokenizer=None)


# ---- tokenizer resolution --------------------------------------------------------------------------

def test_tokenizer_argument_path_is_used(tmp_path):
    from muq_model.checkpoint import resolve_source as resolve

    tokenizer_dir = resolve(MINILM_PACKAGE_SOURCE)
    model = MuQMuLan.from_pretrained(OFFICIAL, tokenizer=str(tokenizer_dir))
    assert model.has_tokenizer
    assert model.tokenize(["calm piano"])[0][0] == 101  # [CLS] of the MiniLM vocabulary


def test_checkpoint_without_any_tokenizer_embeds_audio_only():
    model = MuQMuLan.from_pretrained(OFFICIAL)  # "tiny-xlm-roberta" is in no cache
    assert not model.has_tokenizer
    assert model.embed_audio([wave()]).shape == (1, model.dim)


# ---- external text-encoder weights (frozen all-MiniLM-L6-v2 kept out of the checkpoint) -----------

def minilm_config(sha256: str | None) -> MuQMuLanConfig:
    config = MuQMuLanConfig.tiny()
    hf_config = json.loads((resolve_source(MINILM_PACKAGE_SOURCE) / "config.json").read_text())
    config.text_model.hf_config = {k: v for k, v in hf_config.items() if not k.startswith(("_", "architectures"))}
    config.text_model.model_dim = 384
    config.text_model.external_weights = True
    config.text_model.weights_sha256 = sha256
    return config


def test_external_text_encoder_is_loaded_by_name_and_not_saved(tmp_path):
    weights = resolve_source(MINILM_PACKAGE_SOURCE) / "model.safetensors"
    torch.manual_seed(0)
    model = MuQMuLan(minilm_config(file_sha256(weights))).eval()
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not any(k.startswith("mulan.text.model.") for k in saved)
    assert (tmp_path / "model.safetensors").stat().st_size < 5e6  # the 90 MB encoder stays out

    loaded = MuQMuLan.from_pretrained(tmp_path)
    minilm = load_file(str(weights))
    assert torch.equal(loaded.text.model.embeddings.word_embeddings.weight, minilm["embeddings.word_embeddings.weight"])
    assert loaded.embed_text(["calm piano"]).shape == (1, loaded.dim)


def test_external_text_encoder_hash_mismatch_is_refused(tmp_path):
    torch.manual_seed(0)
    MuQMuLan(minilm_config("0" * 64)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        MuQMuLan.from_pretrained(tmp_path)


# ---- CLI -------------------------------------------------------------------------------------------

def test_model_convert_cli_writes_an_equivalent_safetensors_directory(tmp_path, reference):
    source = copy_official(tmp_path, as_bin=True)
    tokenizer = resolve_source(MINILM_PACKAGE_SOURCE)
    out = tmp_path / "converted"
    assert main(["model", "convert", str(source), str(out), "--tokenizer", str(tokenizer)]) == 0
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    converted = MuQMuLan.from_pretrained(out)
    assert converted.has_tokenizer
    assert torch.equal(converted.embed_audio([wave()]), reference)


def test_model_info_json(tmp_path, capsys):
    assert main(["--json", "model", "info", str(OFFICIAL)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dim"] == 16 and info["audio_encoder"]["layers"] == 12 and info["tokenizer"] is False


def test_model_cli_reports_checkpoint_errors(tmp_path, capsys):
    assert main(["model", "info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _cache_as_hub_snapshot(cache: Path, repo_id: str, files: list[Path]) -> Path:
    """Lay `files` out as huggingface_hub stores a downloaded snapshot: blobs, snapshots/<rev>, refs/main."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in files:
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hub_id_loads_from_the_hub_cache_offline(tmp_path, tiny_model, tiny_model_dir):
    """A hub id resolves through huggingface_hub's cache with HF_HUB_OFFLINE=1: weights from the model's
    snapshot, the tokenizer from the text encoder's own snapshot when the model's has none. Runs in a fresh
    process, as a user would, because transformers reads the cache location when it is imported."""
    import subprocess
    import sys

    cache, staged = tmp_path / "hub", tmp_path / "staged"
    staged.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["text_model"]["name"] = "someone/tiny-text-encoder"  # as xlm-roberta-base for the real model
    (staged / "config.json").write_text(json.dumps(config))
    (staged / "text").mkdir()
    (staged / "text" / "config.json").write_text(json.dumps(config["text_model"]["hf_config"]))
    weights = [staged / "config.json", tiny_model_dir / "model.safetensors"]
    tokenizer = [p for p in tiny_model_dir.iterdir() if p.name not in ("config.json", "model.safetensors")]
    assert tokenizer, "save_pretrained wrote no tokenizer files"
    _cache_as_hub_snapshot(cache, "someone/tiny-mulan", weights)
    _cache_as_hub_snapshot(cache, "someone/tiny-text-encoder", [*tokenizer, staged / "text" / "config.json"])

    wave = torch.randn(24000 * 3, generator=torch.Generator().manual_seed(0))
    save_file({"wave": wave}, tmp_path / "wave.safetensors")
    script = (
        "import sys; from safetensors.torch import load_file, save_file; from muq_model import MuQMuLan\n"
        "m = MuQMuLan.from_pretrained('someone/tiny-mulan').eval()\n"
        "wave = load_file(sys.argv[1])['wave']\n"
        "save_file({'audio': m.embed_audio([wave]), 'text': m.embed_text(['calm piano'])}, sys.argv[2])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "wave.safetensors"), str(tmp_path / "out.safetensors")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "MUQSEARCH_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(tmp_path / "out.safetensors")
    torch.testing.assert_close(got["audio"], tiny_model.embed_audio([wave]), rtol=0, atol=1e-6)
    torch.testing.assert_close(got["text"], tiny_model.embed_text(["calm piano"]), rtol=0, atol=1e-6)
