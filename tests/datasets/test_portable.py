"""The backend-neutral batches (lrsearch.datasets.portable) keep the tf.data streams' contract:
the same examples per pass and the same validation set, for .npy references, .npz uploads and
image folders (at the images' own size, where Pillow and TensorFlow agree exactly); a new
seeded order each epoch; CSV refused with the reason; changed files caught. And a worker on
the PyTorch backend trains on them through `lrsearch.training.train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsearch.datasets import portable, streams
from lrsearch.datasets.references import Csv, ImageFolder, Npy, parse_roots
from lrsearch.datasets.register import register
from lrsearch.datasets.uploaded import open_npz
from lrsearch.errors import DatasetError
from tests.datasets.data_files import write_csv, write_image_folder, write_npy


def one_pass(batches: object, steps: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, (x, y) in enumerate(batches):  # type: ignore[attr-defined]
        if i == steps:
            break
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return sorted(np.ascontiguousarray(a).tobytes() + np.asarray(b).tobytes()
                  for a, b in zip(x, y, strict=True))


def same_contract(mine: portable.PortableInput, theirs: streams.Input) -> None:
    assert (mine.train_examples, mine.val_examples, mine.input_shape, mine.head) == \
        (theirs.train_examples, theirs.val_examples, theirs.input_shape, theirs.head)
    steps = -(-mine.train_examples // 8)
    train = mine.train(8, seed=4)
    assert len(train) == steps
    x, y = one_pass((train[i] for i in range(steps)), steps)
    tx, ty = one_pass(theirs.train(8, seed=4).as_numpy_iterator(), steps)
    assert x.dtype == tx.dtype == np.float32 and y.dtype == ty.dtype
    assert rows(x, y) == rows(tx, ty)
    for a, b in zip(mine.val_arrays(1000), theirs.val_arrays(1000), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("root")


def test_npy_npz_and_images_match_the_tf_streams(root: Path, tmp_path: Path) -> None:
    roots = parse_roots([str(root)])
    npy = Npy(kind="npy", uri=str(write_npy(root / "arrays", 45, shape=(3,), classes=3)))
    facts = register(npy, roots)
    same_contract(portable.from_source("a", npy, facts, roots),
                  streams.from_source("a", npy, facts, roots))

    path = tmp_path / "up.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.integers(0, 256, (30, 2, 2), dtype=np.uint8),
                        y_train=rng.integers(0, 4, 30))
    mapped = open_npz(path, data_dir=tmp_path)
    same_contract(portable.from_npz(mapped), streams.from_npz(mapped))

    folder = write_image_folder(root / "pets", {"cat": 9, "dog": 7}, size=(8, 8))
    images = ImageFolder(kind="image_folder", uri=str(folder), image_size=(8, 8))
    facts = register(images, roots)
    same_contract(portable.from_source("p", images, facts, roots, workers=2),
                  streams.from_source("p", images, facts, roots))


def test_orders_are_seeded_and_change_every_epoch(root: Path) -> None:
    roots = parse_roots([str(root)])
    npy = Npy(kind="npy", uri=str(write_npy(root / "ordered", 40, shape=(2,), classes=2)))
    data = portable.from_source("o", npy, register(npy, roots), roots)
    first = data.train(40, seed=1)
    epoch0 = first[0][0].copy()
    first.on_epoch_end()
    epoch1 = first[0][0]
    again = data.train(40, seed=1)[0][0]
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch0, again)
    np.testing.assert_array_equal(data.val(40)[0][0], data.val(40)[0][0])


def test_csv_needs_tensorflow_and_changes_are_caught(root: Path) -> None:
    roots = parse_roots([str(root)])
    csv = Csv(kind="csv", uri=str(write_csv(root / "rows.csv", 20, features=2, target="y")),
              target="y")
    with pytest.raises(DatasetError, match="KERAS_BACKEND=tensorflow"):
        portable.from_source("c", csv, register(csv, roots), roots)
    folder = write_image_folder(root / "drift", {"a": 3, "b": 3})
    images = ImageFolder(kind="image_folder", uri=str(folder), image_size=(8, 8))
    facts = register(images, roots)
    write_image_folder(folder, {"b": 4})
    with pytest.raises(DatasetError, match="changed since registration"):
        portable.from_source("d", images, facts, roots)


TRAIN_ON_TORCH = """
import json, sys
import keras
from lrsearch import models
from lrsearch.datasets.references import ImageFolder, Registered
from lrsearch.spec import BuiltinModel, DataRef, RunSpec
from lrsearch.training import TrainConfig, open_input, train

source = ImageFolder.model_validate_json(sys.argv[1])
facts = Registered.model_validate_json(sys.argv[2])
roots = tuple(json.loads(sys.argv[3]))
params = models.validate("mlp", {"hidden": [8]}, tuple(facts.input_shape), facts.head,
                         max_params=10_000)
spec = RunSpec(model=BuiltinModel(name="mlp", params=params),
               data=DataRef(name="pets", source=source, registered=facts), batch_size=4)
used = type(open_input(spec, data_dir=None, roots=roots)).__name__
result = train(TrainConfig(spec, schedule="constant", schedule_params={"lr": 0.05}, epochs=2,
                           roots=roots))
print(json.dumps({"backend": keras.backend.backend(), "input": used,
                  "steps": result.steps_per_epoch,
                  "loss": [r.metrics["loss"] for r in result.epochs]}))
"""


def test_a_pytorch_backend_worker_trains_on_an_image_folder(root: Path) -> None:
    pytest.importorskip("torch")
    roots = parse_roots([str(root)])
    folder = write_image_folder(root / "torch-pets", {"cat": 10, "dog": 10}, size=(6, 6))
    source = ImageFolder(kind="image_folder", uri=str(folder), image_size=(6, 6))
    facts = register(source, roots)
    out = subprocess.run([sys.executable, "-c", TRAIN_ON_TORCH, source.model_dump_json(),
                          facts.model_dump_json(), json.dumps(list(roots))],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "torch"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "torch" and result["input"] == "PortableInput"
    assert result["steps"] == 4  # 16 training images, batch 4
    assert len(result["loss"]) == 2 and all(np.isfinite(result["loss"]))


def test_a_16_bit_png_reads_as_tensorflow_reads_it(tmp_path: Path) -> None:
    import tensorflow as tf
    from PIL import Image

    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really 16 bits a pixel
    for channels in (1, 3):
        mine = portable.read_image(str(path), (8, 8), channels)
        theirs = streams.decode_image(tf.io.read_file(str(path)), (8, 8), channels).numpy()
        assert mine.shape == theirs.shape == (8, 8, channels)
        np.testing.assert_allclose(mine, theirs, atol=1 / 255 + 1e-6)
        assert mine.max() > 0.9  # scaled by 65535, not clipped at 255


REGISTER_WITHOUT_TENSORFLOW = """
import json, sys
from lrsearch.datasets.references import ImageFolder
from lrsearch.datasets.register import register
from lrsearch.errors import DatasetError

roots = json.loads(sys.argv[2])
out = {"tensorflow": "tensorflow" in sys.modules}
facts = register(ImageFolder(uri=sys.argv[1] + "/good", image_size=(6, 6)), roots)
out["train"] = facts.train_examples
try:
    register(ImageFolder(uri=sys.argv[1] + "/broken", image_size=(6, 6)), roots)
except DatasetError as e:
    out["error"] = str(e)
out["tensorflow_after"] = "tensorflow" in sys.modules
print(json.dumps(out))
"""


def test_a_worker_without_tensorflow_registers_an_image_folder(root: Path,
                                                               tmp_path: Path) -> None:
    """A JAX worker on a machine without TensorFlow checks every image with Pillow when it
    registers an image folder, and names an unreadable one as a TensorFlow worker does."""
    folder = root / "no-tf"
    write_image_folder(folder / "good", {"cat": 4, "dog": 4}, size=(6, 6))
    broken = write_image_folder(folder / "broken", {"cat": 3, "dog": 3}, size=(6, 6))
    (broken / "cat" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "_register_script.py").write_text(REGISTER_WITHOUT_TENSORFLOW)
    launcher = Path(__file__).resolve().parents[1] / "without_tensorflow.py"
    out = subprocess.run([sys.executable, str(launcher), "-m", "_register_script", str(folder),
                          json.dumps([str(root)])], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "KERAS_BACKEND": "jax",
                                           "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["train"] > 0
    assert "`cat/2.png`" in result["error"] and "cannot be read as an image" in result["error"]
    assert str(folder) not in result["error"]  # no server path
    assert not result["tensorflow_after"]
