"""Data references: roots and uri checks, symlinks, the split rule, fingerprints, and
registration of every file kind on tiny files written here (valid and refused)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from lrsearch.datasets.references import (
    Csv,
    Feature,
    ImageFolder,
    KerasDataset,
    Npy,
    SourceAdapter,
    TFRecord,
    check_source,
    check_uri,
    fingerprint,
    list_files,
    parse_roots,
    resolve_local,
    val_mask,
    visible,
)
from lrsearch.datasets.register import register
from lrsearch.errors import DatasetError
from tests.datasets.data_files import write_csv, write_image_folder, write_npy, write_tfrecord

# --- roots and uris ----------------------------------------------------------------------


def test_roots_parse_json_and_commas_and_normalise(tmp_path: Path) -> None:
    assert parse_roots(None) == () and parse_roots(" , ") == ()
    assert parse_roots(f"{tmp_path}/a/../b/, gs://bucket/x") == (f"{tmp_path}/b",
                                                                  "gs://bucket/x/")
    assert parse_roots(f'["{tmp_path}", "GS://bucket/x//", ""]') == (str(tmp_path),
                                                                      "gs://bucket/x/")
    assert parse_roots([f"file://{tmp_path}", str(tmp_path)]) == (str(tmp_path),)
    with pytest.raises(DatasetError, match="LRSEARCH_DATA_ROOTS"):
        parse_roots('["/a", 3]')
    with pytest.raises(DatasetError, match="JSON list"):
        parse_roots("[not json")


def test_check_uri_refuses_what_leaves_the_roots(tmp_path: Path) -> None:
    roots = [str(tmp_path / "data"), "gs://bucket/sets"]
    inside = tmp_path / "data" / "cats"
    assert check_uri(f"{inside}/./x//", roots) == f"{inside}/x"
    assert check_uri(f"file://{inside}", roots) == str(inside)
    assert check_uri("gs://bucket/sets/a/", roots) == "gs://bucket/sets/a"
    refused = {
        f"{tmp_path}/other": "must lie under",
        f"{tmp_path}/data/../other": "'..'",
        f"{tmp_path}/data/cats/../dogs": "'..'",  # even when it would land inside
        "data/cats": "absolute path",
        f"{tmp_path}/database": "must lie under",  # a prefix of the name is not a parent
        "gs://bucket/setsx/a": "must lie under",
        "gs://bucket/sets/../x": "'.' or '..'",
        "s3://bucket/sets/a": "must lie under",
    }
    for uri, reason in refused.items():
        with pytest.raises(DatasetError, match=reason) as info:
            check_uri(uri, roots, field="source.validation_uri")
        assert info.value.field == "source.validation_uri"
        assert "LRSEARCH_DATA_ROOTS" in str(info.value)
        assert repr(uri) in str(info.value)
    with pytest.raises(DatasetError, match=r"off on this server.*LRSEARCH_DATA_ROOTS"):
        check_uri(str(inside), [])


def test_symlinks_leaving_the_roots_are_refused_where_they_hide(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_image_folder(root / "pets", {"cat": 2, "dog": 2})
    write_image_folder(outside, {"cat": 1, "dog": 1})
    roots = [str(root)]
    assert visible(str(root / "pets"), roots) and not visible(str(tmp_path / "x"), roots)
    assert not visible("gs://bucket/x", roots)
    assert resolve_local(str(root / "pets"), roots) == os.path.realpath(root / "pets")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="outside the roots"):
        check_source(ImageFolder(uri=str(root / "escape")), roots, deep=True)
    source = ImageFolder(uri=str(root / "pets"))
    (root / "pets" / "cat" / "x.png").symlink_to(outside / "cat" / "0.png")
    with pytest.raises(DatasetError, match=r"`cat/x.png`.*outside the roots"):
        list_files(source, roots)
    (root / "pets" / "cat" / "x.png").unlink()
    (root / "pets" / "dog" / "more").symlink_to(outside / "dog", target_is_directory=True)
    with pytest.raises(DatasetError, match=r"`dog/more`.*outside the roots"):
        list_files(source, roots)
    (root / "pets" / "dog" / "more").unlink()
    (root / "pets" / "dog" / "loop").symlink_to(root / "pets" / "dog")
    with pytest.raises(DatasetError, match=r"`dog/loop`.*already listed"):
        list_files(source, roots)
    (root / "pets" / "dog" / "loop").unlink()
    assert len(list_files(source, roots).train) == 4


def test_deep_check_says_missing_or_not_a_folder(tmp_path: Path) -> None:
    roots = [str(tmp_path)]
    with pytest.raises(DatasetError, match="does not exist"):
        check_source(Csv(uri=str(tmp_path / "none.csv"), target="y"), roots, deep=True)
    write_csv(tmp_path / "a.csv", 4)
    with pytest.raises(DatasetError, match="is not a folder") as info:
        check_source(Npy(uri=str(tmp_path), validation_uri=str(tmp_path / "a.csv")), roots,
                     deep=True)
    assert info.value.field == "source.validation_uri"
    checked = check_source(Csv(uri=f"{tmp_path}//a.csv", target="y"), roots, deep=False)
    assert isinstance(checked, Csv) and checked.uri == f"{tmp_path}/a.csv"


def test_source_models_refuse_inconsistent_fields() -> None:
    assert isinstance(SourceAdapter.validate_python({"kind": "keras", "dataset": "mnist"}),
                      KerasDataset)
    bad = [
        {"kind": "image_folder", "uri": "/d", "image_size": [0, 8]},
        {"kind": "image_folder", "uri": "/d", "val_fraction": 1.0},
        {"kind": "csv", "uri": "/d", "target": "y", "features": ["a", "y"]},
        {"kind": "tfrecord", "uri": "/d", "features": {"x": {"dtype": "float32"}},
         "input": "x", "target": "y"},
        {"kind": "tfrecord", "uri": "/d", "input": "x", "target": "y",
         "features": {"x": {"dtype": "float32"}, "y": {"dtype": "float32"}}},
        {"kind": "npy", "uri": "/d", "extra": 1},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            SourceAdapter.validate_python(data)


# --- the split rule and fingerprints -----------------------------------------------------


def test_split_rule_is_exact() -> None:
    assert np.flatnonzero(val_mask(10, 0.2)).tolist() == [4, 9]
    assert np.flatnonzero(val_mask(7, 0.5)).tolist() == [1, 3, 5]
    for n in (5, 17, 100, 1001):
        for f in (0.1, 0.25, 1 / 3, 0.9):
            if 1 <= int(n * f) < n:
                assert val_mask(n, f).sum() == int(np.floor(n * f))
    with pytest.raises(DatasetError, match="val_fraction") as info:
        val_mask(4, 0.2)  # floor(0.8) = 0 held out
    assert "4 examples" in str(info.value)


def test_fingerprint_changes_when_a_file_is_touched_or_added(tmp_path: Path) -> None:
    write_csv(tmp_path / "d" / "a.csv", 5)
    source, roots = Csv(uri=str(tmp_path / "d"), target="y"), [str(tmp_path)]
    first = fingerprint(source, roots)
    assert fingerprint(source, roots) == first
    (tmp_path / "d" / "notes.txt").write_text("not read")  # not a .csv: not part of it
    assert fingerprint(source, roots) == first
    stat = os.stat(tmp_path / "d" / "a.csv")
    os.utime(tmp_path / "d" / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    touched = fingerprint(source, roots)
    assert touched != first
    write_csv(tmp_path / "d" / "b.csv", 5)
    assert fingerprint(source, roots) not in (first, touched)


# --- registration ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refs")


def test_image_folder_registers_with_classes_and_counts(root: Path) -> None:
    uri = write_image_folder(root / "img", {"b_dog": 6, "a_cat": 4}, size=(8, 6))
    (uri / ".hidden").mkdir()
    (uri / "a_cat" / "README.txt").write_text("ignored")
    (uri / "a_cat" / "nested").mkdir()
    write_image_folder(uri / "a_cat" / "nested", {"deep": 1}, mode="L")  # a_cat/nested/deep
    val = write_image_folder(root / "img_val", {"b_dog": 2}, mode="RGBA")
    reg = register(ImageFolder(uri=str(uri), image_size=(5, 7), color_mode="grayscale",
                               val_fraction=0.3), [str(root)])
    assert reg.classes == ("a_cat", "b_dog") and reg.num_classes == 2
    assert (reg.train_examples, reg.val_examples) == (8, 3)  # 11 images, floor(3.3) held out
    assert reg.input_shape == (5, 7, 1) and reg.task == "classes"
    assert reg.element_spec == {"x": {"shape": [5, 7, 1], "dtype": "float32"},
                                "y": {"shape": [], "dtype": "int64"}}
    with_val = register(ImageFolder(uri=str(uri), validation_uri=str(val)), [str(root)])
    assert (with_val.train_examples, with_val.val_examples) == (11, 2)
    assert with_val.input_shape == (64, 64, 3)


def test_image_folder_refusals(root: Path) -> None:
    one = write_image_folder(root / "one", {"only": 3})
    with pytest.raises(DatasetError, match="at least 2 class"):
        register(ImageFolder(uri=str(one)), [str(root)])
    empty = write_image_folder(root / "empty", {"a": 3, "b": 0})
    with pytest.raises(DatasetError, match="have none: b"):
        register(ImageFolder(uri=str(empty)), [str(root)])
    broken = write_image_folder(root / "broken", {"cat": 3, "dog": 3})
    (broken / "cat" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match=r"`cat/3.png`.*cannot be read as an image"):
        register(ImageFolder(uri=str(broken)), [str(root)])
    (broken / "cat" / "3.png").write_bytes(b"GIF89a" + b"\xff\xff\xff\xff" + b"\0" * 20)
    with pytest.raises(DatasetError, match=r"`cat/3.png`.*declares more than"):
        register(ImageFolder(uri=str(broken)), [str(root)])
    (broken / "cat" / "3.png").write_text("plain text")
    with pytest.raises(DatasetError, match=r"`cat/3.png`.*not a PNG, JPEG, BMP or GIF"):
        register(ImageFolder(uri=str(broken)), [str(root)])
    extra = write_image_folder(root / "extra_val", {"cat": 1, "fox": 1})
    (broken / "cat" / "3.png").unlink()
    with pytest.raises(DatasetError, match="lacks: fox"):
        register(ImageFolder(uri=str(broken), validation_uri=str(extra)), [str(root)])


def test_csv_registers_rows_across_sorted_files(root: Path) -> None:
    folder = root / "csv"
    write_csv(folder / "b.csv", 6, regression=False)
    write_csv(folder / "a.csv", 4, regression=False)
    reg = register(Csv(uri=str(folder), target="y", features=("f2", "f0"), task="classes"),
                   [str(root)])
    assert (reg.train_examples, reg.val_examples) == (8, 2)
    assert reg.input_shape == (2,) and reg.num_classes == 3
    targets = register(Csv(uri=str(folder / "a.csv"), target="y", val_fraction=0.25),
                       [str(root)])
    assert targets.task == "targets" and targets.input_shape == (3,)
    assert (targets.train_examples, targets.val_examples, targets.target_shape) == (3, 1, ())


def test_csv_refusals_name_columns_and_rows(root: Path) -> None:
    path = write_csv(root / "bad" / "data.csv", 6)
    with pytest.raises(DatasetError,
                       match=r"'label' is not a column.*Its columns: f0, f1, f2, y") as info:
        register(Csv(uri=str(path), target="label"), [str(root)])
    assert info.value.field == "source.target"
    lines = path.read_text().splitlines()
    lines[4] = "3,abc,4,7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"`data.csv` \(source.uri\) row 4.*column `f1`"):
        register(Csv(uri=str(path), target="y"), [str(root)])
    lines[4] = "3,1e39,4,7"  # beyond float32
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="row 4: a feature column holds NaN or infinite"):
        register(Csv(uri=str(path), target="y"), [str(root)])
    lines[4] = "3,3,4,1.5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"row 4: class id 1.5"):
        register(Csv(uri=str(path), target="y", task="classes"), [str(root)])
    write_csv(root / "bad2" / "a.csv", 4)
    write_csv(root / "bad2" / "b.csv", 4, target="z")
    with pytest.raises(DatasetError, match=r"`b.csv`.*same columns"):
        register(Csv(uri=str(root / "bad2"), target="y"), [str(root)])


def test_tfrecord_and_npy_register(root: Path) -> None:
    records = write_tfrecord(root / "rec" / "a.tfrecord", 10, shape=(2, 3), classes=4)
    source = TFRecord(uri=str(records.parent), input="x", target="y",
                      features={"x": Feature(dtype="float32", shape=(2, 3)),
                                "y": Feature(dtype="int64")})
    reg = register(source, [str(root)])
    assert (reg.train_examples, reg.val_examples, reg.input_shape) == (8, 2, (2, 3))
    assert reg.num_classes == 4
    wrong = source.model_copy(update={"features": {"x": source.features["x"].model_copy(
        update={"shape": (4,)}), "y": source.features["y"]}})
    with pytest.raises(DatasetError, match=r"`a.tfrecord` \(source.uri\) record 0"):
        register(wrong, [str(root)])
    records.write_bytes(records.read_bytes()[:-7])  # cut the last record short
    with pytest.raises(DatasetError, match="record 9 is cut short"):
        register(source, [str(root)])

    folder = write_npy(root / "npy", 12, shape=(2, 2), classes=3)
    got = register(Npy(uri=str(folder), val_fraction=0.25), [str(root)])
    assert (got.train_examples, got.val_examples, got.input_shape) == (9, 3, (2, 2))
    assert got.num_classes == 3
    np.save(folder / "y.npy", np.array(["a"] * 12, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="pickle is refused"):
        register(Npy(uri=str(folder)), [str(root)])
    np.save(folder / "y.npy", np.zeros(12, np.int64))
    with pytest.raises(DatasetError, match="at least 2 classes"):
        register(Npy(uri=str(folder)), [str(root)])
    with open(folder / "x.npy", "ab") as f:
        f.write(b"\0" * 4)
    with pytest.raises(DatasetError, match=r"`x.npy`.*declares shape"):
        register(Npy(uri=str(folder)), [str(root)])


def test_hostile_names_records_and_remote_npy_are_refused(tmp_path: Path) -> None:
    import gzip
    import struct

    roots = parse_roots([str(tmp_path)])
    # A class folder whose name is not UTF-8: it would become a class name in JSON.
    folder = write_image_folder(tmp_path / "names", {"a": 2, "b": 2})
    os.rename(folder / "b", os.fsencode(folder) + b"/caf\xe9")
    with pytest.raises(DatasetError, match=r"caf\\xe9.*not UTF-8"):
        register(ImageFolder(uri=str(folder)), roots)

    # A record declaring 2**40 bytes (TensorFlow's reader would allocate it and die), and a
    # gzip file whose last record is cut short: refused before TensorFlow reads them.
    features = {"x": Feature(dtype="float32", shape=(4,)), "y": Feature(dtype="int64")}
    bomb = tmp_path / "bomb" / "r.tfrecord"
    bomb.parent.mkdir()
    bomb.write_bytes(struct.pack("<Q", 1 << 40) + b"\0" * 68)
    with pytest.raises(DatasetError, match=r"r\.tfrecord.*record 0 declares 1099511627776"):
        register(TFRecord(uri=str(bomb.parent), input="x", target="y", features=features),
                 roots)
    good = write_tfrecord(tmp_path / "cut" / "r.tfrecord", 5)
    raw = good.read_bytes()
    zipped = tmp_path / "cut" / "z.tfrecord"
    zipped.write_bytes(gzip.compress(raw[:-10]))
    good.unlink()
    with pytest.raises(DatasetError, match=r"z\.tfrecord.*record 4 is cut short"):
        register(TFRecord(uri=str(zipped.parent), input="x", target="y", features=features,
                          compression="GZIP"), roots)

    with pytest.raises(ValidationError, match="local folder"):
        Npy(uri="gs://bucket/arrays")


def test_every_gzip_member_of_a_tfrecord_is_walked(tmp_path: Path) -> None:
    """TensorFlow reads every member of a multi-member GZIP file: a hostile record in the
    second member is refused as in the first."""
    import gzip
    import struct

    roots = parse_roots([str(tmp_path)])
    features = {"x": Feature(dtype="float32", shape=(4,)), "y": Feature(dtype="int64")}
    good = write_tfrecord(tmp_path / "src" / "r.tfrecord", 3).read_bytes()
    folder = tmp_path / "multi"
    folder.mkdir()
    (folder / "r.tfrecord").write_bytes(gzip.compress(good) + gzip.compress(
        struct.pack("<Q", 1 << 40) + b"\0" * 68))
    with pytest.raises(DatasetError, match="record 3 declares 1099511627776"):
        register(TFRecord(uri=str(folder), input="x", target="y", features=features,
                          compression="GZIP"), roots)
    (folder / "r.tfrecord").write_bytes(gzip.compress(good) + gzip.compress(good))
    facts = register(TFRecord(uri=str(folder), input="x", target="y", features=features,
                              compression="GZIP", val_fraction=0.5), roots)
    assert facts.train_examples + facts.val_examples == 6
