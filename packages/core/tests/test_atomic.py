"""Atomic writes: readers see the old content or the new, never a part; nothing is left behind."""

import pytest

from metamixer.core.atomic import atomic_path, write_text


def test_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = write_text(tmp_path / "sub" / "metrics.json", "old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        assert out.read_text() == "old"  # not replaced before the block ends
        raise RuntimeError("killed while writing")
    assert out.read_text() == "old"
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]


def test_temporary_keeps_the_suffix_and_is_private_to_the_process(tmp_path):
    with atomic_path(tmp_path / "image.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"png")
    with atomic_path(tmp_path / "image.png") as again:
        assert again == tmp  # the name depends on the target and the pid only
        again.write_bytes(b"png2")
    assert (tmp_path / "image.png").read_bytes() == b"png2"
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


def test_a_folder_replaces_a_folder_whole(tmp_path):
    scene = tmp_path / "scene0000_00"
    scene.mkdir()
    (scene / "stale.npy").write_bytes(b"x")
    with atomic_path(scene) as tmp:
        tmp.mkdir()
        (tmp / "coord.npy").write_bytes(b"y")
    assert [p.name for p in scene.iterdir()] == ["coord.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["scene0000_00"]


def test_a_leftover_temporary_from_a_killed_run_is_overwritten(tmp_path):
    out = tmp_path / "record.json"
    with atomic_path(out) as tmp:
        tmp.write_text("first")
    tmp.mkdir()  # what a run killed mid-way through a folder write would leave
    write_text(out, "new")
    assert out.read_text() == "new" and not tmp.exists()
