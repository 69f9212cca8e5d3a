"""The sample-data loader (download, checksum, cache, offline import) with local files, and ``segtoolkit sample``."""

from __future__ import annotations

import hashlib
import re
import urllib.request

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import read_image, read_label_map
from SegToolkitLib.samples import sample_data
from SegToolkitLib.samples.phantom import make_phantom
from SegToolkitLib.samples.sample_data import SampleDataset, fetch, file_checksum, import_file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(sample_data.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def published(tmp_path):
    """A 'published' file (reached through a file:// URL) and a registry entry for it."""
    source = tmp_path / "server" / "tiny_ct.nii.gz"
    source.parent.mkdir()
    source.write_bytes(np.random.default_rng(3).bytes(3 * 1024 * 1024 + 17))  # several download chunks
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = SampleDataset("tiny", source.as_uri(), "tiny_ct.nii.gz", f"sha256:{digest}", "CC0", "test file",
                          source.stat().st_size)
    return source, {"tiny": entry}


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def test_fetch_downloads_verifies_and_caches(cache, published):
    source, registry = published
    fractions = []
    path = fetch("tiny", registry, progress=lambda fraction, message: fractions.append(fraction))
    assert path == cache / "tiny" / "tiny_ct.nii.gz"
    assert path.read_bytes() == source.read_bytes()
    assert fractions[-1] == pytest.approx(1.0) and len(fractions) >= 3
    assert [p.name for p in path.parent.iterdir()] == ["tiny_ct.nii.gz"]  # no temporary file left


def test_cache_hit_needs_no_network(cache, published, monkeypatch):
    source, registry = published
    first = fetch("tiny", registry)
    source.unlink()
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert fetch("tiny", registry) == first
    assert sample_data.is_cached("tiny", registry)


def test_checksum_mismatch_leaves_nothing_in_the_cache(cache, published):
    source, registry = published
    entry = registry["tiny"]
    registry["tiny"] = SampleDataset(entry.name, entry.url, entry.file_name, "sha256:" + "0" * 64, entry.licence,
                                     entry.description)
    with pytest.raises(InputError, match=r"sha256 is [0-9a-f]{64}, expected 0{64}.*nothing was saved"):
        fetch("tiny", registry)
    assert list((cache / "tiny").iterdir()) == []


def test_md5_checksums_are_accepted(cache, published):
    source, registry = published
    entry = registry["tiny"]
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    registry["tiny"] = SampleDataset(entry.name, entry.url, entry.file_name, f"md5:{md5}", entry.licence,
                                     entry.description)
    assert fetch("tiny", registry).read_bytes() == source.read_bytes()


def test_unreachable_url_is_a_clear_error(cache, published, tmp_path):
    _, registry = published
    entry = registry["tiny"]
    registry["tiny"] = SampleDataset(entry.name, (tmp_path / "missing.nii.gz").as_uri(), entry.file_name,
                                     entry.checksum, entry.licence, entry.description)
    with pytest.raises(InputError, match="cannot download tiny .*segtoolkit sample import tiny FILE"):
        fetch("tiny", registry)
    assert list((cache / "tiny").iterdir()) == []


def test_offline_import(cache, published, tmp_path, monkeypatch):
    source, registry = published
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    downloaded = tmp_path / "Downloads" / "tiny_ct.nii.gz"
    downloaded.parent.mkdir()
    downloaded.write_bytes(source.read_bytes())
    path = import_file("tiny", downloaded, registry)
    assert path == cache / "tiny" / "tiny_ct.nii.gz" and path.read_bytes() == source.read_bytes()
    assert fetch("tiny", registry) == path


def test_import_of_a_wrong_file_is_refused(cache, published, tmp_path):
    _, registry = published
    wrong = tmp_path / "other.nii.gz"
    wrong.write_bytes(b"not the published file")
    with pytest.raises(InputError, match=r"other.nii.gz: sha256 is .*not the published tiny_ct.nii.gz"):
        import_file("tiny", wrong, registry)
    assert list((cache / "tiny").iterdir()) == []
    with pytest.raises(InputError, match="file not found"):
        import_file("tiny", tmp_path / "absent.nii.gz", registry)


def test_unknown_name_lists_the_known_ones(cache, published):
    _, registry = published
    with pytest.raises(InputError, match="unknown sample data set 'nope'; choose one of tiny"):
        fetch("nope", registry)


def test_file_checksum(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    assert file_checksum(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_shipped_registry_is_well_formed():
    assert sample_data.REGISTRY
    for name, entry in sample_data.REGISTRY.items():
        assert name == entry.name and re.fullmatch(r"[a-z0-9-]+", name)
        algorithm, _, digest = entry.checksum.partition(":")
        assert re.fullmatch({"sha256": r"[0-9a-f]{64}", "md5": r"[0-9a-f]{32}"}[algorithm], digest)
        assert entry.url.startswith("https://")
        assert entry.url.rsplit("/", 1)[-1] == entry.file_name
        assert entry.licence and entry.description


def test_cli_list_fetch_and_import(cache, published, tmp_path, monkeypatch, capsys):
    source, registry = published
    monkeypatch.setitem(sample_data.REGISTRY, "tiny", registry["tiny"])
    assert main(["sample", "list"]) == 0
    listing = capsys.readouterr().out
    assert "msd-spleen-2-crop" in listing and "tiny" in listing
    assert main(["sample", "fetch", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "tiny" / "tiny_ct.nii.gz")
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"x")
    assert main(["sample", "import", "tiny", str(wrong)]) == 2
    assert re.match(r"segtoolkit: error: .*wrong.bin: sha256 is", capsys.readouterr().err)
    assert main(["sample", "fetch", "nope"]) == 2
    assert "unknown sample data set 'nope'" in capsys.readouterr().err


def test_cli_phantom_writes_image_truth_and_segmentation(tmp_path, capsys):
    out = tmp_path / "phantom_out"
    assert main(["sample", "phantom", "-o", str(out), "--subject", "2"]) == 0
    expected = make_phantom(subject=2)
    image = read_image(out / "phantom.nii.gz")
    assert np.allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected.image))
    assert image.GetSpacing() == pytest.approx(expected.image.GetSpacing())
    segmentation = read_label_map(out / "truth.seg.nrrd")
    assert {label.name for label in segmentation.labels} >= {"liver", "spleen", "liver lesion"}
    assert np.array_equal(sitk.GetArrayFromImage(segmentation.image), sitk.GetArrayFromImage(expected.labels.image))
    assert (out / "truth.nii.gz").is_file() and (out / "truth.json").is_file()
    assert str(out / "truth.seg.nrrd") in capsys.readouterr().out


def test_cli_phantom_needs_an_existing_parent(tmp_path, capsys):
    out = tmp_path / "missing" / "phantom_out"
    assert main(["sample", "phantom", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
