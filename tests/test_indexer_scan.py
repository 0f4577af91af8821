"""Scanning: audio found by extension and by content, hidden/system entries skipped, symlinks without loops."""

from __future__ import annotations

import os

from benchmarks.audio_files import FORMATS, write_audio
from indexer.scan import scan, sniff_audio
from indexer.tags import read_tags, tags_from_filename
from tests.helpers import write_tags


def test_finds_every_audio_format_recursively_and_ignores_other_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, ext in enumerate(FORMATS):
        write_audio(tmp_path / "a" / f"t{i}{ext}", 0.5, 48000)
    write_audio(tmp_path / "a" / "b" / "deep.flac", 0.5)
    (tmp_path / "a" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"0" * 100)  # JPEG starts like MPEG sync
    (tmp_path / "a" / "notes.txt").write_text("liner notes")
    (tmp_path / "a" / "data.bin").write_bytes(os.urandom(64).replace(b"\xff", b"\x00"))
    result = scan([tmp_path])
    found = {os.path.relpath(f.path, tmp_path) for f in result.files}
    assert found == {f"a/t{i}{ext}" for i, ext in enumerate(FORMATS)} | {"a/b/deep.flac"}
    assert not result.problems


def test_audio_without_an_audio_extension_is_found_by_content(tmp_path):
    write_audio(tmp_path / "x.wav", 0.5).rename(tmp_path / "track.bak")
    write_audio(tmp_path / "y.flac", 0.5).rename(tmp_path / "noext")
    write_audio(tmp_path / "z.m4a", 0.5).rename(tmp_path / "z.download")
    (tmp_path / "plain.dat").write_text("hello")
    found = sorted(os.path.basename(f.path) for f in scan([tmp_path]).files)
    assert found == ["noext", "track.bak", "z.download"]


def test_sniffing():
    assert sniff_audio(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert sniff_audio(b"ID3\x04\x00\x00\x00\x00\x00\x00")
    assert sniff_audio(b"\xff\xfb\x90\x64")  # MPEG-1 layer III frame
    assert not sniff_audio(b"%PDF-1.4\n")
    assert not sniff_audio(b"")


def test_hidden_and_system_entries_are_skipped(tmp_path):
    write_audio(tmp_path / "visible.wav", 0.5)
    write_audio(tmp_path / ".hidden.wav", 0.5)
    write_audio(tmp_path / "._visible.wav", 0.5)  # macOS resource fork
    for folder in (".git", "@eaDir", "$RECYCLE.BIN"):
        (tmp_path / folder).mkdir()
        write_audio(tmp_path / folder / "x.wav", 0.5)
    result = scan([tmp_path])
    assert [os.path.basename(f.path) for f in result.files] == ["visible.wav"]
    assert result.skipped_hidden == 5


def test_symlink_loops_end_and_linked_files_count_once(tmp_path):
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    write_audio(music / "album" / "song.flac", 0.5)
    (music / "album" / "loop").symlink_to(music)  # album/loop -> music -> album -> loop ...
    (music / "self").symlink_to(music / "self")  # a link to itself
    (music / "alias.flac").symlink_to(music / "album" / "song.flac")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_audio(outside / "linked_in.ogg", 0.5)
    (music / "linked_dir").symlink_to(outside)
    result = scan([music])
    found = sorted(os.path.relpath(f.path, music) for f in result.files)
    assert found == ["album/song.flac", "linked_dir/linked_in.ogg"]
    assert [reason for _, reason in result.problems] == ["broken symlink"]  # "self" cannot be resolved


def test_broken_symlink_and_missing_root_are_reported_not_raised(tmp_path):
    (tmp_path / "gone.mp3").symlink_to(tmp_path / "nowhere.mp3")
    result = scan([tmp_path, tmp_path / "no-such-folder"])
    problems = dict(result.problems)
    assert problems[str(tmp_path / "gone.mp3")] == "broken symlink"
    assert "No such file" in problems[str(tmp_path / "no-such-folder")]
    assert result.files == []


def test_several_roots_a_file_root_and_an_excluded_folder(tmp_path):
    (tmp_path / "r1").mkdir()
    write_audio(tmp_path / "r1" / "a.wav", 0.5)
    (tmp_path / "r2" / "library").mkdir(parents=True)
    write_audio(tmp_path / "r2" / "b.wav", 0.5)
    write_audio(tmp_path / "r2" / "library" / "cached.wav", 0.5)
    single = write_audio(tmp_path / "single.mp3", 0.5)
    result = scan([tmp_path / "r1", tmp_path / "r2", single, tmp_path / "r1"], exclude=[tmp_path / "r2" / "library"])
    assert [os.path.relpath(f.path, tmp_path) for f in result.files] == ["r1/a.wav", "r2/b.wav", "single.mp3"]


def test_tags_are_read_and_the_file_name_fills_gaps(tmp_path):
    tagged = write_audio(tmp_path / "whatever.mp3", 0.5)
    write_tags(tagged, title="Blue in Green", artist="Miles Davis", album="Kind of Blue", date="1959-08-17",
               genre="Jazz; Modal", tracknumber="3/5")
    tags = read_tags(tagged)
    assert (tags.title, tags.artist, tags.album, tags.year, tags.tracknumber) == (
        "Blue in Green", "Miles Davis", "Kind of Blue", 1959, 3
    )
    assert tags.genres == ["Jazz", "Modal"] and not tags.from_filename
    untagged = read_tags(write_audio(tmp_path / "07 - Nina Simone - Feeling Good.flac", 0.5))
    assert (untagged.title, untagged.artist, untagged.tracknumber) == ("Feeling Good", "Nina Simone", 7)
    assert untagged.from_filename
    assert tags_from_filename("Ünïcødé_song.m4a").title == "Ünïcødé song"
    assert read_tags(tmp_path / "not-even-there.mp3").title == "not-even-there"
