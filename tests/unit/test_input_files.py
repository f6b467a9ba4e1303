"""edgeq.formats.input_files: the one way every path a user names is checked and read."""

from __future__ import annotations

import os

import pytest

from edgeq.errors import InputError, ModelFileError
from edgeq.formats import input_files as inf


def test_special_files_are_refused_naming_the_option(tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    link = tmp_path / "z.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"--baseline '.*f.json': is a FIFO"):
        inf.read_file(fifo, "--baseline", 1024)
    with pytest.raises(InputError, match=r"character device \(through a symbolic link\)"):
        inf.read_file(link, "--baseline", 1024)
    with pytest.raises(ModelFileError, match=r"^model '.*': is a directory, not a regular file"):
        inf.check_file(tmp_path, "model", error=ModelFileError)
    assert inf.check_file_or_dir(tmp_path, "--data")


def test_missing_dangling_and_looping_paths(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InputError, match="not found"):
        inf.check_file(tmp_path / "nope", "--labels")
    with pytest.raises(InputError, match="symbolic link to nothing"):
        inf.check_file(tmp_path / "dangling", "--labels")
    with pytest.raises(InputError, match="loop of symbolic links"):
        inf.check_file(tmp_path / "loop", "--labels")


def test_size_is_known_before_reading_and_reads_are_bounded(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(3 * inf.MiB)  # sparse: no disk, and it must not be read
    with pytest.raises(InputError, match=r"is 3.0 MiB, over the 2.0 MiB edgeq reads for --labels"):
        inf.read_file(big, "--labels", 2 * inf.MiB)
    small = tmp_path / "small.txt"
    small.write_bytes(b"abc")
    assert inf.read_file(small, "--labels", 3) == b"abc"
    assert inf.read_text(small, "--labels", 3) == "abc"


def test_what_is_opened_is_checked_not_only_the_name(tmp_path, monkeypatch):
    """A name swapped for a FIFO between the check and the open: the open does not block and
    fstat of what was opened refuses it."""
    fifo = tmp_path / "swapped.tflite"
    os.mkfifo(fifo)
    monkeypatch.setattr(inf, "check_file", lambda *a, **k: None)
    with pytest.raises(InputError, match="is a FIFO"):
        inf.open_file(fifo, "model", 1024)


def test_output_paths(tmp_path):
    inf.check_output_path(tmp_path / "new.json", "--report")
    (tmp_path / "old.json").write_text("{}")
    inf.check_output_path(tmp_path / "old.json", "--report")
    os.mkfifo(tmp_path / "f.json")
    with pytest.raises(InputError, match=r"--report '.*f.json': is a FIFO"):
        inf.check_output_path(tmp_path / "f.json", "--report")
