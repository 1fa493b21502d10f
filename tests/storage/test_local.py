import pytest

from trilho import StorageError
from trilho.storage import Lake, LocalLake, open_lake, sha256_file


def test_local_lake_is_write_once(tmp_path):
    lake = LocalLake(tmp_path / "lake")
    assert isinstance(lake, Lake)
    assert lake.put_bytes("raw/a/x.bin", b"first") is True
    assert lake.put_bytes("raw/a/x.bin", b"second") is False  # never overwritten
    assert lake.get_bytes("raw/a/x.bin") == b"first"
    assert lake.put_bytes("reports/r/x.json", b"1") and lake.put_bytes("reports/r/x.json", b"2", overwrite=True)
    assert lake.get_bytes("reports/r/x.json") == b"2"
    assert lake.list("raw/") == ["raw/a/x.bin"]
    assert not list((tmp_path / "lake").rglob(".tmp-*"))  # no temp files left behind


def test_local_lake_put_file_and_download(tmp_path):
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n1,2\n")
    lake = LocalLake(tmp_path / "lake")
    assert lake.put_file("raw/d/sha/data.csv", src)
    out = lake.download("raw/d/sha/data.csv", tmp_path / "back.csv")
    assert sha256_file(out) == sha256_file(src)
    assert lake.url("raw/d/sha/data.csv").startswith("file://")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(StorageError, match="relative path"):
        LocalLake(tmp_path).put_bytes(key, b"x")


def test_missing_object_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        LocalLake(tmp_path).get_bytes("raw/nothing")


def test_open_lake_picks_the_backend(settings):
    assert isinstance(open_lake(settings), LocalLake)
