"""MuLan training on the tiny config: the fast paths equal the model's, the loss falls, resume is exact,
bad rows and files are skipped, and two torchrun ranks match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from data.demo.synth import SAMPLE_RATE, ClipSpec, render
from muq_model.config import MuQMuLanConfig
from muq_model.model import MuQMuLan
from muq_model.training import DataError, TrainConfig, TrainItem, read_pairs, train
from muq_model.training.loop import LabelHeads

INSTRUMENTS = ("piano", "organ", "bells", "flute", "brass", "strings")
BASE = {"tempo": "medium", "mode": "major", "loudness": "loud", "rhythm": "none", "register": "middle",
        "texture": "chords", "bass": "none"}


def tiny_config(dropout: float = 0.1) -> MuQMuLanConfig:
    config = MuQMuLanConfig.tiny()
    config.audio_model.muq.encoder_depth = 2  # same code paths, faster
    config.audio_model.muq.dropout = dropout
    config.text_model.hf_config.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return config


def load(path):
    audio, sr = sf.read(path, dtype="float32")
    assert sr == SAMPLE_RATE
    return audio


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six 3-second clips, one per instrument, each with two captions naming it."""
    root = tmp_path_factory.mktemp("pairs")
    with open(root / "pairs.jsonl", "w") as f:
        for i, name in enumerate(INSTRUMENTS):
            spec = ClipSpec({**BASE, "instrument": name}, bpm=100.0, tonic=i, seconds=3.0, seed=i)
            sf.write(root / f"{name}.wav", render(spec), SAMPLE_RATE)
            f.write(json.dumps({"audio_path": f"{name}.wav", "captions": [f"{name} chords", f"music for {name}"]}) + "\n")
    return root / "pairs.jsonl"


def test_fast_paths_equal_the_model_paths():
    """What training runs on the towers' cached features equals the model on the clips and token ids."""
    torch.manual_seed(0)
    model = MuQMuLan(tiny_config()).eval()
    clips = torch.randn(2, SAMPLE_RATE * 2) * 0.1
    with torch.no_grad():
        mel = model.audio.features(clips)
        assert mel.shape[2] == model.config.muq.n_mels  # time first
        torch.testing.assert_close(model.encode_audio_features(mel), model.encode_audio(clips))
        stem = model.audio.features(clips, through_stem=True)
        rates = model.audio.features_per_second(through_stem=True), model.audio.features_per_second()
        assert abs(stem.shape[1] - mel.shape[1] * rates[0] / rates[1]) < 1  # the stem's time strides
        torch.testing.assert_close(model.encode_audio_features(stem, through_stem=True), model.encode_audio(clips))
        ids = [torch.tensor(t) for t in model.tokenize(["slow sad piano", "a loud brass march with drums"])]
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
        mask = padded != 0
        hidden = model.text.features(padded, mask.long())
        torch.testing.assert_close(
            model.encode_text_features(hidden, mask), model.encode_text_ids(padded, mask.long(), pad_aware=True)
        )


def test_read_pairs_formats_and_errors(tmp_path, dataset, capsys):
    items = read_pairs(dataset)
    assert [i.audio.name for i in items] == [f"{n}.wav" for n in INSTRUMENTS]
    assert items[0].captions == ["piano chords", "music for piano"]

    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("audio_path,text,split\na.wav,one,train\na.wav,two,train\nb.wav,three,test\n")
    items = read_pairs(csv_file, split="train")
    assert len(items) == 1 and items[0].captions == ["one", "two"] and items[0].audio == (tmp_path / "a.wav").resolve()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio_path": "a.wav", "text": "x"}) + "\n" + json.dumps({"text": "no audio"}) + "\n")
    capsys.readouterr()
    items = read_pairs(bad)  # the bad row is reported by file and line, and skipped
    assert [(i.audio.name, i.captions) for i in items] == [("a.wav", ["x"])]
    assert capsys.readouterr().out == "skipped bad.jsonl:2: no audio path (one of the fields audio_path, audio, path, file)\n"
    bad.write_text(json.dumps({"audio_path": "a.wav", "captions": []}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: no caption"):
        read_pairs(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "missing.jsonl")


def test_group_by_reads_nested_fields_and_names_rows_without_one(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"audio_path": f"{n}.wav", "text": "x", "attributes": {"instrument": inst}}
            for n, inst in enumerate(["piano", "organ", "piano"])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.group for i in read_pairs(data, group_by="attributes.instrument")] == ["piano", "organ", "piano"]
    assert all(i.group is None for i in read_pairs(data))
    with pytest.raises(DataError, match=r"pairs.jsonl:1: no value for the --group-by field 'attributes.mode'"):
        read_pairs(data, group_by="attributes.mode")


def test_grouped_batches_hold_group_size_items_of_each_group():
    """Hard-negative batches: k distinct items from each of several groups, different groups per step."""
    from muq_model.training.batches import BatchSampler
    from muq_model.training.features import Features

    groups = [f"g{i % 5}" for i in range(40)]  # 5 groups of 8
    features = Features(audio=[torch.zeros(20, 3)] * 40, texts=[[torch.zeros(2, 4)]] * 40, frames_per_second=10.0,
                        skipped=[])
    sampler = BatchSampler(features, global_batch=12, crop_frames=5, seed=0, groups=groups, group_size=4)
    seen = set()
    for _ in range(20):
        batch = sampler.next_indices()
        assert len(batch) == len(set(batch)) == 12
        labels = [groups[i] for i in batch]
        assert sorted(labels.count(g) for g in set(labels)) == [4, 4, 4]
        seen.add(frozenset(labels))
    assert len(seen) > 1
    with pytest.raises(ValueError, match="group"):
        BatchSampler(features, 12, 5, 0, groups=None, group_size=4)


def quick_config(**overrides) -> TrainConfig:
    values = dict(steps=40, batch_size=6, lr=3e-3, warmup_steps=5, crop_seconds=2.0, log_every=5,
                  eval_every=1000, checkpoint_every=1000, seed=0)
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize("train_stem", [True, False])
def test_a_few_steps_make_the_loss_fall(tmp_path, dataset, train_stem):
    torch.manual_seed(0)
    model = MuQMuLan(tiny_config())
    stem_before = [p.clone() for p in model.audio.model.conv.conv.parameters()]
    result = train(model, read_pairs(dataset), tmp_path / "out", quick_config(train_stem=train_stem), load)
    stem_after = list(model.audio.model.conv.conv.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(stem_before, stem_after, strict=True)) == train_stem
    first, last = result.losses[0], result.losses[-1]
    assert last < first - 0.3, result.losses
    assert (tmp_path / "out" / "model.safetensors").is_file()
    reloaded = MuQMuLan.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(reloaded.embed_text(["piano chords"]), model.eval().embed_text(["piano chords"]))
    assert reloaded.caption_words == model.caption_words  # the words its captions taught it, for query spelling
    assert reloaded.caption_words["chords"] == 6 and reloaded.caption_words["music"] == 6


def test_a_frozen_audio_tower_makes_the_same_vectors_after_training(tmp_path, dataset):
    """Its BatchNorm running statistics used to move in training mode, shifting every audio vector."""
    torch.manual_seed(0)
    model = MuQMuLan(tiny_config())
    wave = torch.as_tensor(load(dataset.parent / "piano.wav"))
    before = model.eval().embed_audio([wave], SAMPLE_RATE)
    train(model, read_pairs(dataset), tmp_path / "out", quick_config(steps=6, train_audio=False), load)
    assert model.audio.training is False  # frozen: left in eval mode by model.train()
    torch.testing.assert_close(model.eval().embed_audio([wave], SAMPLE_RATE), before, rtol=0, atol=0)
    text = model.embed_text(["piano chords"])
    model.train()
    assert model.text.transformer.training and not model.audio.model.conv.training
    torch.testing.assert_close(model.eval().embed_text(["piano chords"]), text)


def test_a_wholly_frozen_model_is_refused_before_any_audio_is_read(tmp_path, dataset):
    read = []
    with pytest.raises(ValueError, match="nothing to train"):
        train(MuQMuLan(tiny_config()), read_pairs(dataset), tmp_path / "out",
              quick_config(train_audio=False, train_text=False), lambda path: read.append(path) or load(path))
    assert read == []


def test_labels_are_read_per_item_and_rows_without_them_are_named(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    rows = [{"audio_path": "0.wav", "text": "x", "attributes": {"instrument": "piano", "tempo": "slow"}},
            {"audio_path": "1.wav", "text": "y", "attributes": {"instrument": "organ"}},
            {"audio_path": "2.wav", "text": "z", "attributes": "organ"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_pairs(data, labels="attributes")
    assert [i.labels for i in items] == [{"instrument": "piano", "tempo": "slow"}, {"instrument": "organ"}]
    assert "pairs.jsonl:3: no {kind: value} object in the --labels field 'attributes'" in capsys.readouterr().out
    assert all(i.labels is None for i in read_pairs(data))


def test_label_heads_map_values_and_leave_out_missing_kinds():
    items = [TrainItem(Path("a.wav"), ["x"], labels={"mode": "minor", "tempo": "slow"}),
             TrainItem(Path("b.wav"), ["y"], labels={"mode": "major"})]
    heads = LabelHeads(items, 4)
    assert heads.values == {"mode": ["major", "minor"], "tempo": ["slow"]}
    assert heads.targets.tolist() == [[1, 0], [0, -1]]
    latents = torch.randn(2, 4, requires_grad=True)
    heads(latents, [0, 1]).backward()
    assert latents.grad.abs().sum() > 0  # the loss reaches the audio latents
    only_b = heads(latents[1:], [1])  # no tempo target in this batch: the mode head alone
    torch.testing.assert_close(only_b, F.cross_entropy(heads.logits(latents[1:], 0), torch.tensor([0])))
    prototype = F.normalize(heads.prototypes[0][0], dim=0)  # a latent on value 0's prototype: the cosine bound
    assert heads.logits(prototype[None], 0)[0, 0].item() == pytest.approx(heads.scale)


def test_the_label_loss_trains_and_its_heads_stay_out_of_the_saved_model(tmp_path, dataset):
    torch.manual_seed(0)
    model = MuQMuLan(tiny_config())
    result = train(model, labelled(read_pairs(dataset)), tmp_path / "out", quick_config(label_weight=1.0), load)
    assert result.losses[-1] < result.losses[0] - 0.3, result.losses
    logged = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    label_losses = [r["label_loss"] for r in logged if "label_loss" in r]  # logged apart from the total
    assert len(label_losses) == len(result.losses) and label_losses[-1] < label_losses[0]
    assert all(r["label_loss"] > 0 for r in logged if "label_loss" in r)
    state = torch.load(tmp_path / "out" / "training_state.pt", weights_only=True)["module"]
    assert any(k.startswith("labels.prototypes.") for k in state)  # resumable
    reloaded = MuQMuLan.from_pretrained(tmp_path / "out")  # strict: no head in the model
    torch.testing.assert_close(reloaded.embed_text(["piano chords"]), model.eval().embed_text(["piano chords"]))
    with pytest.raises(ValueError, match="--labels"):
        train(MuQMuLan(tiny_config()), read_pairs(dataset), tmp_path / "none", quick_config(label_weight=1.0), load)


def test_loss_switches_that_are_not_implemented_are_refused(tmp_path, dataset):
    """A config asking for the sigmoid or hierarchical loss must not silently train the softmax one."""
    config = tiny_config()
    config.mulan.sigmoid_contrastive_loss = True
    with pytest.raises(ValueError, match="sigmoid_contrastive_loss"):
        train(MuQMuLan(config), read_pairs(dataset), tmp_path / "out", quick_config(), load)


def labelled(items):
    """The items with two label kinds, one of them missing on the organ (ignored there)."""
    for item in items:
        item.labels = {"instrument": item.audio.stem}
        if item.audio.stem != "organ":
            item.labels["sustained"] = str(item.audio.stem in ("organ", "flute", "brass", "strings"))
    return items


@pytest.mark.parametrize("with_labels", [False, True])
def test_resume_continues_exactly(tmp_path, dataset, with_labels):
    items = labelled(read_pairs(dataset)) if with_labels else read_pairs(dataset)
    quick = partial(quick_config, label_weight=1.0 if with_labels else 0.0)
    torch.manual_seed(0)
    straight = MuQMuLan(tiny_config())
    train(straight, items, tmp_path / "straight", quick(steps=8), load)

    torch.manual_seed(0)
    first = MuQMuLan(tiny_config())
    train(first, items, tmp_path / "split", quick(steps=5), load)  # stops at 5 with a checkpoint
    torch.manual_seed(1)  # a different init: everything must come from the checkpoint
    resumed = MuQMuLan(tiny_config())
    resumed.text.model.load_state_dict(first.text.model.state_dict())  # the frozen encoder is the same model
    train(resumed, items, tmp_path / "split", quick(steps=8), load, resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [5, 8]
    assert resumed.caption_words == straight.caption_words  # counted once, however many runs it took


def test_a_feature_cache_is_read_back_only_for_the_same_inputs(tmp_path, dataset, capsys):
    """--feature-cache: a second run on the same data reads the pass instead of decoding the audio again and
    trains exactly as the first; another caption, a touched file or another frozen stem make a new pass."""
    from muq_model.training.features import prepare_features

    decoded = []

    def counting_load(path):
        decoded.append(Path(path).name)
        return load(path)

    items = read_pairs(dataset)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    items.append(TrainItem(broken, ["broken chords"]))
    cache = tmp_path / "cache"
    runs = []
    for run in ("first", "second"):
        torch.manual_seed(0)
        model = MuQMuLan(tiny_config())
        runs.append(train(model, items, tmp_path / run, quick_config(steps=6), counting_load, feature_cache=cache))
    assert len(decoded) == 7 and len(list(cache.glob("features-*.pt"))) == 1  # the second run decoded nothing
    out = capsys.readouterr().out
    assert "features: 6 items read from" in out and out.count(f"skipped {broken}") == 2
    assert runs[0].losses == runs[1].losses
    first = MuQMuLan.from_pretrained(tmp_path / "first")
    second = MuQMuLan.from_pretrained(tmp_path / "second")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    model = MuQMuLan(tiny_config()).eval()
    model.freeze(audio=True, stem=True, text=True)
    kept, features = prepare_features(model, items[:6], load, frozen_stem=True, cache=cache)
    again_kept, again = prepare_features(model, items[:6], counting_load, frozen_stem=True, cache=cache)
    assert again_kept == kept and len(decoded) == 7
    assert all(torch.equal(a, b) for a, b in zip(features.audio, again.audio, strict=True))
    assert all(torch.equal(a, b) for x, y in zip(features.texts, again.texts, strict=True)
               for a, b in zip(x, y, strict=True))
    with torch.no_grad():
        next(model.text.transformer.parameters()).add_(1.0)  # trained, not cached: the same pass
    prepare_features(model, items[:6], counting_load, frozen_stem=True, cache=cache)
    assert len(decoded) == 7
    changes = [
        lambda: items[0].captions.append("another caption"),
        lambda: os.utime(items[1].audio, ns=(0, 0)),
        lambda: model.audio.model.conv.conv[0].conv1.weight.data.add_(1.0),
    ]
    for n, change in enumerate(changes):
        change()
        prepare_features(model, items[:6], counting_load, frozen_stem=True, cache=cache)
        assert len(decoded) == 7 + 6 * (n + 1), n


def test_undecodable_files_are_skipped_and_reported(tmp_path, dataset, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    items = read_pairs(dataset)
    items[0].audio = broken
    model = MuQMuLan(tiny_config())
    result = train(model, items, tmp_path / "out", quick_config(steps=2, batch_size=4), load)
    assert result.steps == 2
    assert f"skipped {broken}" in capsys.readouterr().out


def test_periodic_evaluation_uses_the_injected_metrics(tmp_path, dataset):
    seen = []

    def evaluate(text, audio, relevant):
        seen.append((text.shape, audio.shape, relevant.sum()))
        return {"text_to_music": {"r@1": {"value": 0.5}}}

    items = read_pairs(dataset)
    model = MuQMuLan(tiny_config())
    result = train(model, items, tmp_path / "out", quick_config(steps=4, eval_every=2), load,
                   eval_items=items[:3], evaluate=evaluate)
    assert seen == [((6, 16), (3, 16), 6)] * 2
    assert [e["step"] for e in result.evaluations] == [2, 4]


def test_train_command_reads_every_data_file_and_groups_across_them(tmp_path, dataset, capsys):
    """`muqsearch train A B --group-by F`: the items of both files are trained on together."""
    from app.cli import main

    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    for name, part in (("a.jsonl", rows[:4]), ("b.jsonl", rows[4:])):
        lines = [json.dumps({**row, "audio_path": str(dataset.parent / row["audio_path"]), "piece": i % 2})
                 for i, row in enumerate(part)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    code = main(["train", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--init-config", str(config),
                 "--out", str(tmp_path / "out"), "--steps", "2", "--batch-size", "6", "--crop-seconds", "2",
                 "--freeze-stem", "--group-by", "piece", "--group-size", "3", "--log-every", "1", "--device", "cpu"])
    assert code == 0
    assert "features: 6/6 items" in capsys.readouterr().out
    assert len((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_two_torchrun_ranks_match_one_process(tmp_path, dataset):
    """`muqsearch train` under torchrun (2 CPU ranks, gloo) follows the single-process loss curve."""
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config(dropout=0.0).to_json())
    common = ["train", str(dataset), "--init-config", str(config), "--steps", "12", "--batch-size", "6",
              "--crop-seconds", "2", "--freeze-stem", "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "1", "--device", "cpu"]
    runs = {
        "single": [sys.executable, "-m", "app", *common, "--out", str(tmp_path / "single")],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "app", *common, "--out", str(tmp_path / "ddp")],
    }
    losses = {}
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "MUQSEARCH_THREADS": "1"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        log = (tmp_path / name / "train_log.jsonl").read_text().splitlines()
        losses[name] = np.array([json.loads(line)["loss"] for line in log])
    assert len(losses["single"]) == len(losses["ddp"]) == 12
    # Same weights, batches, gathered negatives and BatchNorm statistics (synced over the ranks): the two
    # curves differ only by the order of float sums, over every step.
    np.testing.assert_allclose(losses["ddp"], losses["single"], rtol=1e-3, atol=1e-4)
    for curve in losses.values():
        assert curve[-3:].mean() < curve[:3].mean() - 0.5


def test_learning_rate_warms_up_then_anneals_by_steps_or_time():
    from muq_model.training.schedule import learning_rate

    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(100, config) == pytest.approx(0.1)
    timed = TrainConfig(steps=100, lr=1.0, warmup_steps=10, max_minutes=1.0)
    assert learning_rate(20, timed, elapsed_seconds=0.0) == pytest.approx(learning_rate(20, config))
    assert learning_rate(20, timed, elapsed_seconds=60.0) == pytest.approx(0.1)  # the clock ran out first


def pretrained_muq(tmp_path, config: MuQMuLanConfig, **changes):
    """A standalone MuQ checkpoint (as `muqsearch pretrain` writes it) with the audio tower's architecture,
    Mel-RVQ head and quantiser included, changed by `changes`."""
    import dataclasses

    from muq_model.encoder import MuQ

    torch.manual_seed(7)
    muq = MuQ(dataclasses.replace(config.muq, codebook_size=2048, use_rvq_target=True, **changes))
    return muq, muq.save_pretrained(tmp_path / "muq")


def train_from_muq(tmp_path, dataset, muq_dir):
    from app.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    return main(["train", str(dataset), "--init-config", str(config), "--audio-from", str(muq_dir),
                 "--out", str(tmp_path / "out"), "--steps", "1", "--batch-size", "6", "--crop-seconds", "2",
                 "--lr", "0", "--warmup-steps", "0", "--device", "cpu"])


def test_audio_from_starts_the_audio_tower_from_a_pretrained_muq(tmp_path, dataset):
    """`train --init-config C --audio-from MUQ`: every encoder tensor of the saved model is the MuQ's (lr 0,
    so one step changes no weight, only BatchNorm statistics, which are left out here); the MuLan parts
    start fresh."""
    from muq_model.checkpoint import load_muq_into_audio_tower

    muq, muq_dir = pretrained_muq(tmp_path, tiny_config())
    assert train_from_muq(tmp_path, dataset, muq_dir) == 0
    trained = MuQMuLan.from_pretrained(tmp_path / "out")
    tower = trained.audio.model.state_dict()
    source = muq.model.state_dict()
    weights = [k for k in tower if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 50
    for key in weights:
        torch.testing.assert_close(tower[key], source[key], rtol=0, atol=0, msg=key)

    fresh = MuQMuLan(tiny_config())
    load_muq_into_audio_tower(fresh, muq_dir)
    for key, value in fresh.audio.model.state_dict().items():  # straight after init: BatchNorm too
        assert torch.equal(value, source[key]), key


def test_audio_from_refuses_a_muq_of_another_shape_naming_the_field_or_key(tmp_path, dataset, capsys):
    _, muq_dir = pretrained_muq(tmp_path, tiny_config(), encoder_dim=tiny_config().muq.encoder_dim * 2)
    assert train_from_muq(tmp_path, dataset, muq_dir) == 2
    err = capsys.readouterr().err
    assert "--audio-from" in err and "encoder_dim" in err
    assert not (tmp_path / "out").exists()

    from safetensors.torch import load_file, save_file

    _, muq_dir = pretrained_muq(tmp_path, tiny_config())
    state = load_file(muq_dir / "model.safetensors")
    del state["model.conformer.layers.0.ffn1.output_dense.weight"]
    state["model.extra.weight"] = torch.zeros(2)
    save_file(state, muq_dir / "model.safetensors")
    assert train_from_muq(tmp_path, dataset, muq_dir) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "model.conformer.layers.0.ffn1.output_dense.weight" in err
    assert "unexpected" in err and "model.extra.weight" in err


def test_audio_from_needs_init_config(tmp_path, dataset, capsys):
    from app.cli import main

    code = main(["train", str(dataset), "--model", "data/demo/model", "--audio-from", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--steps", "1"])
    assert code == 2
    assert "--init-config" in capsys.readouterr().err


def test_label_kind_weights_weigh_each_kinds_loss():
    items = [TrainItem(Path("a.wav"), ["x"], labels={"mode": "minor", "tempo": "slow"}),
             TrainItem(Path("b.wav"), ["y"], labels={"mode": "major", "tempo": "fast"})]
    torch.manual_seed(0)
    plain = LabelHeads(items, 4)
    torch.manual_seed(0)
    weighted = LabelHeads(items, 4, kind_weights={"tempo": 3.0})
    latents = F.normalize(torch.randn(2, 4), dim=-1)
    mode, tempo = (F.cross_entropy(plain.logits(latents, j), plain.targets[:, j]) for j in (0, 1))
    torch.testing.assert_close(plain(latents, [0, 1]), (mode + tempo) / 2)
    torch.testing.assert_close(weighted(latents, [0, 1]), (mode + 3 * tempo) / 4)
    torch.manual_seed(0)
    torch.testing.assert_close(LabelHeads(items, 4, kind_weights={"mode": 0.0})(latents, [0, 1]), tempo)
    with pytest.raises(ValueError, match="bass: the labels have no such kind .they have mode, tempo"):
        LabelHeads(items, 4, kind_weights={"bass": 2.0})


@pytest.mark.parametrize("flag, message", [
    (["--label-kind-weight", "bass"], "--label-kind-weight: 'bass': expected KIND=W"),
    (["--label-kind-weight", "bass=-1"], "expected KIND=W with a weight >= 0"),
    (["--label-kind-weight", "bass=2"], "give --labels FIELD too"),
])
def test_train_refuses_malformed_label_kind_weights(tmp_path, dataset, capsys, flag, message):
    from app.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    code = main(["train", str(dataset), "--init-config", str(config), "--out",
                 str(tmp_path / "out"), "--steps", "1", *flag])
    assert code == 2 and message in capsys.readouterr().err


def test_an_unknown_label_kind_weight_is_refused_before_any_audio_is_read(tmp_path, dataset):
    def load(path):
        raise AssertionError(f"audio read ({path}) before the settings were checked")

    config = quick_config(label_weight=1.0, label_kind_weights={"bass": 2.0})
    with pytest.raises(ValueError, match="bass: the labels have no such kind .they have instrument, sustained"):
        train(MuQMuLan(tiny_config()), labelled(read_pairs(dataset)), tmp_path / "out", config, load)
