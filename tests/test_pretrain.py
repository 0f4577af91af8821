"""MuQ self-supervised pretraining: waveform masking, and `muqsearch pretrain rvq|ssl|iter` on a few demo
tracks (every result loads with MuQ.from_pretrained), resume after a kill, and torchrun against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from muq_model import MuQ
from muq_model.encoder import official_config
from muq_model.pretraining import MaskedPrediction, RVQFitting, mask_waveform, preset

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "library"
FAST = ["--steps", "6", "--batch-size", "4", "--crop-seconds", "2", "--warmup-steps", "1", "--log-every", "1",
        "--lr", "3e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    for name in ("demo-0001.opus", "demo-0002.opus", "demo-0003.opus"):
        shutil.copy(DEMO / name, folder / name)
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    return folder


def pretrain(capsys, *args) -> dict:
    code = main(["pretrain", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads(captured.out.strip().splitlines()[-1])


def log_losses(directory: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (directory / "pretrain_log.jsonl").read_text().splitlines()]


def test_masking_replaces_whole_blocks_with_noise_and_marks_their_tokens():
    generator = torch.Generator().manual_seed(0)
    wave = torch.ones(64, 9600 * 7 + 1920)  # 7 blocks of 0.4 s + 2 tokens that are never masked
    masked, mask = mask_waveform(wave, 9600, 10, 72, 0.6, generator)
    blocks = mask[:, :70].view(64, 7, 10)
    assert (blocks == blocks[..., :1]).all() and not mask[:, 70:].any()  # 10 tokens per block, all or none
    samples = masked[:, : 9600 * 7].view(64, 7, 9600)
    noisy = blocks[..., 0]
    assert (samples[~noisy] == 1).all() and (masked[:, 9600 * 7 :] == 1).all()
    noise = samples[noisy]
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.1) < 0.002
    # 448 Bernoulli(0.6) blocks: the masked share lies within 4 standard errors of 0.6
    share = float(noisy.float().mean())
    assert abs(share - 0.6) < 4 * (0.6 * 0.4 / noisy.numel()) ** 0.5


def test_masked_prediction_trains_only_the_encoder_and_head():
    torch.manual_seed(0)
    config, ssl = preset("tiny")
    task = MaskedPrediction(MuQ(config, ssl))
    trained = {name for name, p in task.named_parameters() if p.requires_grad}
    assert not any(name.startswith("muq.model.rvq.") for name in trained)
    assert "muq.model.cls_token" not in trained and "muq.model.linear.weight" in trained
    wave = torch.randn(2, 48000) * 0.1
    inputs = task.draw(wave, torch.Generator().manual_seed(1))
    loss, metrics = task(**inputs)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(metrics["accuracy"]) <= 1
    assert task.muq.model.linear.weight.grad is not None and task.muq.model.rvq.quantizers[0].codebook.weight.grad is None


def test_reconstruction_loss_adds_the_weighted_mel_error():
    torch.manual_seed(0)
    config, ssl = preset("tiny")
    muq = MuQ(config, replace(ssl, recon_loss_ratio=0.5)).eval()
    wave = torch.randn(2, 48000) * 0.1
    task = MaskedPrediction(muq)
    inputs = task.draw(wave, torch.Generator().manual_seed(1))
    codes = muq.tokenize(wave)
    plain = muq(inputs["masked"], targets=codes, mask=inputs["mask"])
    full = muq(inputs["masked"], targets=codes, mask=inputs["mask"], recon_target=muq.model.folded_mel(wave))
    assert full.recon_loss > 0
    torch.testing.assert_close(full.loss, plain.loss + 0.5 * full.recon_loss)
    loss, _ = task(**inputs)
    loss.backward()
    assert muq.model.recon_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", ["tiny", "small", "large"])
def test_presets_round_trip_through_the_official_config(size):
    config, ssl = preset(size)
    from muq_model.encoder import read_official_config

    assert read_official_config(official_config(config, ssl)) == (config, ssl)


def test_rvq_ssl_and_iter_commands_train_and_every_result_loads(tmp_path, audio, capsys):
    rvq = pretrain(capsys, "rvq", str(audio), "--out", str(tmp_path / "rvq"), *FAST)
    assert rvq["steps"] == 6 and rvq["loss_last"] < rvq["loss_first"]
    assert len(rvq["perplexity_last"]) == 8 and rvq["reconstruction_l1_last"] > 0

    ssl = pretrain(capsys, "ssl", str(audio), "--rvq", str(tmp_path / "rvq"), "--out", str(tmp_path / "ssl"), *FAST)
    assert ssl["steps"] == 6 and ssl["loss_last"] < ssl["loss_first"] and 0 <= ssl["accuracy_last"] <= 1
    tokenizer, model = MuQ.from_pretrained(tmp_path / "rvq"), MuQ.from_pretrained(tmp_path / "ssl")
    wave = torch.randn(1, 48000) * 0.1
    assert torch.equal(tokenizer.tokenize(wave), model.tokenize(wave))  # the frozen Mel-RVQ travels along

    baseline = pretrain(capsys, "ssl", str(audio), "--targets", "random-projection", "--out", str(tmp_path / "rp"),
                        *FAST)
    assert baseline["steps"] == 6
    assert not MuQ.from_pretrained(tmp_path / "rp").config.use_rvq_target

    iteration = pretrain(capsys, "iter", str(audio), "--model", str(tmp_path / "ssl"), "--layer", "1",
                         "--out", str(tmp_path / "iter"), *FAST)
    assert iteration["steps"] == 6 and iteration["layer"] == 1 and iteration["latent_rvq"]["steps"] == 6
    second = MuQ.from_pretrained(tmp_path / "iter")
    assert second(wave).last_hidden_state.shape == (1, 50, 32)
    for name in ("rvq", "ssl", "rp", "iter"):
        assert len(log_losses(tmp_path / name)) == 6


def test_bad_files_are_reported_by_name_and_the_run_goes_on(tmp_path, audio, capsys):
    code = main(["pretrain", "rvq", str(audio), "--out", str(tmp_path / "rvq"), "--steps", "1", *FAST[2:]])
    err = capsys.readouterr().err
    assert code == 0 and "broken.wav" in err


def test_usage_errors_name_the_missing_argument(tmp_path, audio, capsys):
    assert main(["pretrain", "ssl", str(audio), "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "--rvq" in capsys.readouterr().err
    assert main(["pretrain", "iter", str(audio), "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "--layer" in capsys.readouterr().err


def test_a_killed_run_resumes_exactly(tmp_path, audio, capsys, monkeypatch):
    args = ["ssl", str(audio), "--targets", "random-projection", *FAST]
    pretrain(capsys, *args, "--out", str(tmp_path / "whole"))

    calls = {"n": 0}
    forward = MaskedPrediction.forward

    def dies_at_step_5(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return forward(self, *a, **k)

    monkeypatch.setattr(MaskedPrediction, "forward", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        main(["pretrain", *args, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(MaskedPrediction, "forward", forward)
    assert len(log_losses(tmp_path / "killed")) == 4
    resumed = pretrain(capsys, *args, "--out", str(tmp_path / "killed"))
    assert resumed["steps"] == 6
    np.testing.assert_allclose(log_losses(tmp_path / "killed"), log_losses(tmp_path / "whole"), rtol=1e-6)
    a, b = MuQ.from_pretrained(tmp_path / "whole"), MuQ.from_pretrained(tmp_path / "killed")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_a_crashed_run_resumes_from_its_last_checkpoint_without_duplicate_log_lines(tmp_path, audio, capsys,
                                                                                      monkeypatch):
    args = ["rvq", str(audio), *FAST, "--checkpoint-every", "3"]
    pretrain(capsys, *args, "--out", str(tmp_path / "whole"))
    calls = {"n": 0}
    forward = RVQFitting.forward

    def crashes_at_step_5(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("power cut")
        return forward(self, *a, **k)

    monkeypatch.setattr(RVQFitting, "forward", crashes_at_step_5)
    with pytest.raises(RuntimeError, match="power cut"):
        main(["pretrain", *args, "--out", str(tmp_path / "crashed")])
    monkeypatch.setattr(RVQFitting, "forward", forward)
    assert len(log_losses(tmp_path / "crashed")) == 4  # steps 1-4 logged, the checkpoint holds 3
    pretrain(capsys, *args, "--out", str(tmp_path / "crashed"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "crashed" / "pretrain_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(log_losses(tmp_path / "crashed"), log_losses(tmp_path / "whole"), rtol=1e-6)


@pytest.mark.slow
def test_two_torchrun_ranks_match_one_process(tmp_path, audio):
    """`muqsearch pretrain ssl` under torchrun (2 CPU ranks, gloo) follows the single-process loss curve."""
    config, ssl = preset("tiny")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.json").write_text(json.dumps(official_config(replace(config, dropout=0.0), ssl)))
    common = ["pretrain", "ssl", str(audio), "--targets", "random-projection", "--config",
              str(tmp_path / "config" / "config.json"), *FAST]
    runs = {
        "single": [sys.executable, "-m", "app", *common, "--out", str(tmp_path / "single")],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "app", *common, "--out", str(tmp_path / "ddp")],
    }
    for command in runs.values():
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "MUQSEARCH_THREADS": "1"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    single, ddp = log_losses(tmp_path / "single"), log_losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 6
    # Same weights, crops, masks and BatchNorm statistics (synced over the ranks): the curves differ only
    # by the order of float sums.
    np.testing.assert_allclose(ddp, single, rtol=1e-4, atol=1e-5)


def test_pretrains_on_the_tracks_of_an_indexed_library(tmp_path, audio, tiny_model_dir, capsys):
    music = tmp_path / "music"
    music.mkdir()
    shutil.copy(audio / "demo-0001.opus", music / "a.opus")
    assert main(["index", str(music), "--library", str(tmp_path / "lib"), "--model", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    result = pretrain(capsys, "--library", str(tmp_path / "lib"), "rvq", "--out", str(tmp_path / "rvq"), *FAST)
    assert result["steps"] == 6
    assert main(["pretrain", "rvq", "--out", str(tmp_path / "x"), *FAST]) == 2  # neither audio nor --library
    assert "--library" in capsys.readouterr().err
