"""distilkit.serialization.atomic: a file or folder appears complete or not at all."""

import pytest

from distilkit.serialization.atomic import STAGING_PREFIX, publishing_file, publishing_folder


def test_a_file_is_replaced_only_when_its_writing_finished(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with publishing_file(path) as staging:
            staging.write_text("half")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "old"
    with publishing_file(path) as staging:
        staging.write_text("new")
        assert path.read_text() == "old"  # readers still see the previous file
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_folder_is_replaced_whole_or_kept_when_another_writer_was_first(tmp_path):
    folder = tmp_path / "model"
    with publishing_folder(folder) as staging:
        staging.mkdir()
        (staging / "a").write_text("1")
        assert not folder.exists()
    with publishing_folder(folder) as staging:
        staging.mkdir()
        (staging / "b").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]  # no file of the older folder is left
    with publishing_folder(folder, keep_existing=True) as staging:
        staging.mkdir()
        (staging / "c").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))
