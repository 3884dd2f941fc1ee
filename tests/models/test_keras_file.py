"""Checking an uploaded `.keras` file without running it: archives saved by real Keras are
accepted or refused by what they contain (a Lambda layer, a class no worker registers), with
what they declare summarised; hostile zips (path tricks, unknown members, a config nested too
deep, sizes that lie, a compression bomb) are refused in bounded time and memory."""

from __future__ import annotations

import json
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from lrsearch.errors import ModelError
from lrsearch.models.keras_file import (
    MAX_DEPTH,
    MAX_JSON_BYTES,
    ModelTooLarge,
    check_keras_file,
)
from tests.datasets.test_npz_hardening import patch_size
from tests.models.keras_archives import (
    CUSTOM_LAYER,
    CUSTOM_LOSS,
    compiled_custom_loss,
    functional,
    layer,
    members,
    rewritten,
    sequential,
    with_lambda,
    zip_bytes,
)

BIG = 1 << 40  # a decompression budget no test reaches


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One archive of each kind, saved by Keras once for the module."""
    folder = tmp_path_factory.mktemp("keras")
    return {"functional": functional(folder / "functional.keras"),
            "sequential": sequential(folder / "sequential.keras"),
            "lambda": with_lambda(folder / "lambda.keras"),
            "compiled": compiled_custom_loss(folder / "compiled.keras")}


def refusal(path: Path, known: tuple[str, ...] = (), max_bytes: int = BIG) -> ModelError:
    with pytest.raises(ModelError) as info:
        check_keras_file(path, max_decompressed_bytes=max_bytes, known_custom=known)
    assert info.value.field == "file"
    return info.value


def write(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path.write_bytes(zip_bytes(entries, method))
    return path


def test_functional_with_a_registered_custom_layer_is_summarised(saved: dict[str, Path]
                                                                 ) -> None:
    summary = check_keras_file(saved["functional"], max_decompressed_bytes=BIG,
                               known_custom={CUSTOM_LAYER, "other>Thing"})
    assert summary.input_shapes == [[None, 8, 8, 1]]
    assert summary.output_shapes == [[None, 10]]
    assert (summary.compiled, summary.loss, summary.metrics) == (False, [], [])
    assert summary.custom_objects == [CUSTOM_LAYER]
    assert (summary.model_class, summary.layers) == ("Functional", 4)
    assert summary.keras_version == keras.__version__
    assert summary.decompressed_bytes == sum(len(b) for b in members(saved["functional"])
                                             .values())
    assert summary.as_dict()["input_shapes"] == [[None, 8, 8, 1]]


def test_an_unregistered_custom_layer_is_refused_by_name(saved: dict[str, Path]) -> None:
    error = refusal(saved["functional"])
    assert f"`{CUSTOM_LAYER}`" in str(error) and "no live worker publishes" in str(error)
    error = refusal(saved["functional"], known=("other>Thing",))
    assert f"`{CUSTOM_LAYER}`" in str(error) and "they register: other>Thing" in str(error)


def test_a_sequential_model_of_builtins_needs_no_plugin(saved: dict[str, Path]) -> None:
    summary = check_keras_file(saved["sequential"], max_decompressed_bytes=BIG)
    assert summary.input_shapes == [[None, 4]] and summary.output_shapes == [[None, 3]]
    assert summary.custom_objects == [] and summary.model_class == "Sequential"
    assert summary.compiled is False


def test_a_lambda_layer_is_refused_naming_it(saved: dict[str, Path]) -> None:
    error = refusal(saved["lambda"], known=(CUSTOM_LAYER,))
    assert "`Lambda` layer `doubler`" in str(error) and "Python code" in str(error)


def test_a_bare_serialized_lambda_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    """A lambda hidden outside a Lambda layer (as an activation) is code too."""
    def edit(config: dict) -> None:
        layer(config, "Dense")["config"]["activation"] = {
            "class_name": "__lambda__", "config": {"code": "AAAA", "defaults": None,
                                                   "closure": None}}
    error = refusal(rewritten(saved["sequential"], tmp_path / "m.keras", edit))
    assert "Lambda" in str(error)


def test_compiled_with_a_custom_loss_reports_loss_and_metrics(saved: dict[str, Path]) -> None:
    summary = check_keras_file(saved["compiled"], max_decompressed_bytes=BIG,
                               known_custom={CUSTOM_LAYER, CUSTOM_LOSS})
    assert summary.compiled is True
    assert summary.loss == [CUSTOM_LOSS]
    assert summary.metrics == ["accuracy", "auc"]
    assert summary.custom_objects == [CUSTOM_LAYER, CUSTOM_LOSS]
    error = refusal(saved["compiled"], known=(CUSTOM_LAYER,))
    assert f"`{CUSTOM_LOSS}`" in str(error)


def test_builtin_loss_objects_and_an_unknown_optimizer_pass(tmp_path: Path) -> None:
    """Keras' own loss and metric objects need no plugin; the saved optimizer is never built,
    so even a class nobody registers there does not matter."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    model.save(tmp_path / "c.keras")

    def edit(config: dict) -> None:
        config["compile_config"]["optimizer"] = {"module": "evil", "class_name": "Boom",
                                                 "config": {}, "registered_name": "x>Boom"}
    path = rewritten(tmp_path / "c.keras", tmp_path / "d.keras", edit)
    summary = check_keras_file(path, max_decompressed_bytes=BIG)
    assert summary.compiled and summary.loss == ["sparse_categorical_crossentropy"]
    assert summary.metrics == ["top2"] and summary.custom_objects == []


def test_a_class_claiming_a_keras_module_under_another_name_is_refused(
        saved: dict[str, Path], tmp_path: Path) -> None:
    def edit(config: dict) -> None:
        dense = layer(config, "Dense")
        dense["registered_name"] = "evil>Dense"
    error = refusal(rewritten(saved["sequential"], tmp_path / "m.keras", edit))
    assert "`evil>Dense`" in str(error)


def test_a_zip_that_is_not_keras_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    npz = tmp_path / "data.keras"
    with open(npz, "wb") as f:
        np.savez(f, x_train=np.zeros((4, 2)), y_train=np.arange(4))
    error = refusal(npz)
    assert "x_train.npy" in str(error) and "config.json" in str(error)
    partial = write(tmp_path / "p.keras", {"metadata.json": b"{}", "model.weights.h5": b""})
    assert "it has no `config.json`" in str(refusal(partial))
    assert "not a zip archive" in str(refusal(write_raw(tmp_path / "t.keras", b"hello")))


def write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["../x", "/abs", "assets/../../x", "a\\b", "C:/x",
                                  "assets/./x"])
def test_path_tricks_in_member_names_are_refused(saved: dict[str, Path], tmp_path: Path,
                                                 name: str) -> None:
    path = rewritten(saved["sequential"], tmp_path / "m.keras", extra={name: b"x"})
    assert f"`{name}` is not a plain relative path" in str(refusal(path))


def test_unknown_duplicate_and_too_many_members_are_refused(saved: dict[str, Path],
                                                            tmp_path: Path) -> None:
    unknown = rewritten(saved["sequential"], tmp_path / "u.keras", extra={"payload.py": b"x"})
    assert "unknown member `payload.py`" in str(refusal(unknown))
    assets = rewritten(saved["sequential"], tmp_path / "a.keras", extra={"assets/vocab": b"x"})
    assert check_keras_file(assets, max_decompressed_bytes=BIG).custom_objects == []
    entries = members(saved["sequential"])
    duplicate = tmp_path / "d.keras"
    with warnings.catch_warnings(), zipfile.ZipFile(duplicate, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we write
        for name, data in [*entries.items(), ("config.json", entries["config.json"])]:
            zf.writestr(name, data)
    assert "`config.json` appears more than once" in str(refusal(duplicate))
    many = rewritten(saved["sequential"], tmp_path / "m.keras",
                     extra={f"assets/{i}": b"" for i in range(80)})
    assert "at most 64 members" in str(refusal(many))


def test_other_compression_methods_and_encryption_are_refused(saved: dict[str, Path],
                                                             tmp_path: Path) -> None:
    bzip = write(tmp_path / "b.keras", members(saved["sequential"]), zipfile.ZIP_BZIP2)
    assert "compression method 12" in str(refusal(bzip))
    data = bytearray(zip_bytes(members(saved["sequential"])))
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the general flags
        start = data.find(signature)
        data[start + at] |= 1
    assert "is encrypted" in str(refusal(write_raw(tmp_path / "e.keras", bytes(data))))


def test_a_deeply_nested_config_is_refused_without_crashing(saved: dict[str, Path],
                                                           tmp_path: Path) -> None:
    entries = members(saved["sequential"])
    lists = b"[" * 10_000 + b"]" * 10_000
    error = refusal(write(tmp_path / "l.keras", {**entries, "config.json": lists}))
    assert "`config.json` is not valid JSON" in str(error)
    error = refusal(write(tmp_path / "m.keras", {**entries, "metadata.json": lists}))
    assert "`metadata.json` is not valid JSON" in str(error)
    # Nested less than the JSON parser allows, more than the checks walk.
    nested: dict = {"class_name": "Dense"}
    for _ in range(MAX_DEPTH + 50):
        nested = {"class_name": "Sequential", "module": "keras", "config": {"layers": [nested]}}
    error = refusal(write(tmp_path / "n.keras",
                          {**entries, "config.json": json.dumps(nested).encode()}))
    assert f"nests deeper than {MAX_DEPTH} levels" in str(error)


def test_a_config_that_is_not_a_model_is_refused(saved: dict[str, Path],
                                                 tmp_path: Path) -> None:
    entries = members(saved["sequential"])
    for config in (b"[]", b'{"config": {}}', b"\xff\xfe"):
        error = refusal(write(tmp_path / "c.keras", {**entries, "config.json": config}))
        assert "config.json" in str(error)


def test_a_compression_bomb_is_refused_by_its_declared_size(saved: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """30 MB of zeros in the weights compress to about 30 kB: the declared size is over the
    budget, so nothing is decompressed."""
    entries = members(saved["sequential"])
    bomb = write(tmp_path / "bomb.keras", {**entries, "model.weights.h5": bytes(30 << 20)})
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ModelTooLarge) as info:
            check_keras_file(bomb, max_decompressed_bytes=10 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "max_decompressed_bytes=10485760" in str(info.value) and info.value.field == "file"
    assert peak < 2 << 20


def test_json_members_are_read_in_bounded_memory_whatever_they_declare(
        saved: dict[str, Path], tmp_path: Path) -> None:
    entries = members(saved["sequential"])
    # Declares a huge config.json: over the budget, or over what is ever read of a JSON member.
    raw = zip_bytes({**entries, "config.json": b" " * 1000})
    huge = write_raw(tmp_path / "h.keras", patch_size(raw, "config.json", 3 << 30))
    with pytest.raises(ModelTooLarge):
        check_keras_file(huge, max_decompressed_bytes=1 << 30)
    assert f"at most {MAX_JSON_BYTES} are read" in str(refusal(huge))
    # Declares 1000 bytes and holds 64 MiB of spaces: no more than MAX_JSON_BYTES is inflated
    # (zipfile inflates a read's worth before it cuts at the declared size), and the CRC of
    # what was declared does not match.
    raw = zip_bytes({**entries, "config.json": b" " * (64 << 20)})
    liar = write_raw(tmp_path / "liar.keras", patch_size(raw, "config.json", 1000))
    tracemalloc.start()
    try:
        error = refusal(liar)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "`config.json` is corrupt" in str(error)
    assert peak < 2.5 * MAX_JSON_BYTES < 64 << 20


def _dense(config: dict) -> dict:
    return layer(config, "Dense")


@pytest.mark.parametrize("edit,culprit", [
    # Layers that unpickle or load other programs are refused by name, whatever the worker's
    # Keras would do in safe mode.
    (lambda c: _dense(c).update(class_name="TorchModuleWrapper"), "TorchModuleWrapper"),
    (lambda c: _dense(c).update(class_name="TFSMLayer"), "TFSMLayer"),
    # A Keras module's function that is not one of Keras' losses, metrics or activations.
    (lambda c: _dense(c)["config"].update(activation={
        "module": "keras.utils", "class_name": "function", "config": "get_file",
        "registered_name": "get_file"}), "get_file"),
    # A registered name hidden in a plain string, and a Keras-looking class registered under
    # another name.
    (lambda c: _dense(c)["config"].update(kernel_initializer="evil>Init"), "evil>Init"),
    (lambda c: _dense(c).update(registered_name="evil>Dense"), "evil>Dense"),
    # A module that only looks like Keras'.
    (lambda c: _dense(c).update(module="keras_evil.layers"), "keras_evil.layers.Dense"),
    # A class Keras would resolve from a typespec's module.
    (lambda c: _dense(c)["config"].update(spec={"class_name": "__typespec__",
                                                "module": "evil", "spec_name": "X"}),
     "__typespec__"),
    # A class_name that is not a string.
    (lambda c: _dense(c)["config"].update(bias_initializer={"class_name": 0,
                                                            "registered_name": "evil>X"}),
     "class_name"),
])
def test_code_and_unregistered_names_are_refused_wherever_they_hide(
        saved: dict[str, Path], tmp_path: Path, edit: object, culprit: str) -> None:
    error = refusal(rewritten(saved["sequential"], tmp_path / "m.keras", edit))  # type: ignore[arg-type]
    assert culprit in str(error)


def test_a_vocabulary_read_from_a_file_is_refused(saved: dict[str, Path],
                                                  tmp_path: Path) -> None:
    def edit(config: dict) -> None:
        _dense(config).update(class_name="StringLookup", config={"name": "words",
                                                                 "vocabulary": "/etc/passwd"})
    assert "vocabulary is a file path" in str(refusal(rewritten(
        saved["sequential"], tmp_path / "m.keras", edit)))


@pytest.mark.parametrize("odd", [[1, 2], 7, "layers", {"layers": 3}])
def test_a_config_of_odd_shapes_is_a_refusal_not_a_crash(saved: dict[str, Path],
                                                         tmp_path: Path, odd: object) -> None:
    def edit(config: dict) -> None:
        config["config"] = odd
    path = rewritten(saved["sequential"], tmp_path / "m.keras", edit)
    try:
        check_keras_file(path, max_decompressed_bytes=BIG, known_custom=())
    except ModelError as e:
        assert e.field == "file"
