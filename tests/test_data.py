"""Fashion-MNIST loading, verification, error messages and on-device batching.

The real files come from Debian's ``dataset-fashion-mnist`` (skipped cleanly if absent); small
IDX files are written here by a writer independent of the loader; tfds runs under
``tfds.testing.mock_data`` with the network blocked and without TensorFlow.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import socket
import struct
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import data

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
REAL_FILES = {  # name -> (decompressed size, magic, shape) from upstream's documentation
    "train-images-idx3-ubyte": (47_040_016, 2051, (60_000, 28, 28)),
    "train-labels-idx1-ubyte": (60_008, 2049, (60_000,)),
    "t10k-images-idx3-ubyte": (7_840_016, 2051, (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": (10_008, 2049, (10_000,)),
}
HAS_TF = importlib.util.find_spec("tensorflow") is not None
requires_real = pytest.mark.skipif(
    not all((REAL_DIR / f"{name}.gz").is_file() for name in REAL_FILES),
    reason=f"Fashion-MNIST IDX files absent (apt-get install dataset-fashion-mnist): {REAL_DIR}",
)


# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` as IDX (big-endian, uint8 or int32), written here from the format's spec."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    array = np.asarray(array)
    if array.dtype == np.int32:
        array = array.astype(">i4")
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def make_idx_dir(root: Path, rng, *, n_train=12, n_test=5, gz=False):
    """Write four tiny Fashion-MNIST-shaped IDX files; return their arrays by file name."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = data.IDX_FILES[split]
        arrays[images_name] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[labels_name] = rng.integers(0, 10, (n,), dtype=np.uint8)
    for name, array in arrays.items():
        write_idx(root / name, array, gz=gz)
    return arrays


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of each file's decompressed bytes, computed here with gzip and hashlib."""
    out = {}
    for name in REAL_FILES:
        path = root / name if (root / name).exists() else root / f"{name}.gz"
        raw = path.read_bytes()
        out[name] = hashlib.sha256(
            gzip.decompress(raw) if path.suffix == ".gz" else raw
        ).hexdigest()
    return out


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No JAXCONV_DATA_DIR from the caller's shell. (tfds reads TFDS_DATA_DIR once, at import:
    every tfds test here passes tfds_data_dir or runs under mock_data, which sets it.)"""
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def real():
    if not all((REAL_DIR / f"{name}.gz").is_file() for name in REAL_FILES):
        pytest.skip("Fashion-MNIST IDX files absent: apt-get install dataset-fashion-mnist")
    return data.load_fashion_mnist(REAL_DIR)


def jaxconv_records(caplog):
    return [r for r in caplog.records if r.name == "jaxconv.data"]


# --------------------------------------------------------------------------- the real files


@requires_real
def test_real_files_sizes_headers_and_pinned_digests():
    """Upstream's facts (sizes, magic numbers, counts) hold, and the pins are these files'."""
    assert digests(REAL_DIR) == data.FASHION_MNIST_SHA256
    for name, (size, magic, shape) in REAL_FILES.items():
        raw = gzip.decompress((REAL_DIR / f"{name}.gz").read_bytes())
        assert len(raw) == size
        assert struct.unpack(">I", raw[:4])[0] == magic
        assert struct.unpack(f">{len(shape)}I", raw[4 : 4 + 4 * len(shape)]) == shape


def test_real_split_counts_dtypes_and_balance(real):
    assert real.source == f"idx:{REAL_DIR}"
    assert real.class_names == data.CLASS_NAMES == (
        "t-shirt", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle boot",
    )  # fmt: skip
    for split, n in (("train", 60_000), ("test", 10_000)):
        s = getattr(real, split)
        assert s.images.shape == (n, 28, 28) and s.images.dtype == np.uint8
        assert s.labels.shape == (n,) and s.labels.dtype == np.int32
        assert np.bincount(s.labels, minlength=10).tolist() == [n // 10] * 10
        assert s.images.min() == 0 and s.images.max() == 255
        assert not s.images.flags.writeable


def test_real_arrays_equal_the_raw_bytes(real):
    """The parser returns exactly the bytes after each header, in file order."""
    for split in ("train", "test"):
        images_name, labels_name = data.IDX_FILES[split]
        raw_images = gzip.decompress((REAL_DIR / f"{images_name}.gz").read_bytes())
        raw_labels = gzip.decompress((REAL_DIR / f"{labels_name}.gz").read_bytes())
        s = getattr(real, split)
        assert s.images.tobytes() == raw_images[16:]
        assert s.labels.astype(np.uint8).tobytes() == raw_labels[8:]
    assert real.train.labels[:8].tolist() == [9, 0, 0, 3, 0, 2, 7, 2]
    assert real.test.labels[:8].tolist() == [9, 2, 1, 1, 6, 1, 4, 6]


def test_real_example_set_digest_is_pinned_and_order_free(real):
    assert data.example_set_sha256(real.train) == data.EXAMPLE_SET_SHA256["train"]
    assert data.example_set_sha256(real.test) == data.EXAMPLE_SET_SHA256["test"]
    perm = np.random.default_rng(1).permutation(len(real.test))
    shuffled = data.Split(real.test.images[perm], real.test.labels[perm])
    assert data.example_set_sha256(shuffled) == data.EXAMPLE_SET_SHA256["test"]
    relabelled = real.test.labels.copy()
    relabelled[17] = (relabelled[17] + 1) % 10
    changed = data.Split(real.test.images, relabelled)
    assert data.example_set_sha256(changed) != data.EXAMPLE_SET_SHA256["test"]


@requires_real
def test_real_train_and_test_images_swapped_is_named(tmp_path):
    for name in REAL_FILES:
        (tmp_path / f"{name}.gz").symlink_to(REAL_DIR / f"{name}.gz")
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").symlink_to(REAL_DIR / "t10k-images-idx3-ubyte.gz")
    (tmp_path / "t10k-images-idx3-ubyte.gz").symlink_to(REAL_DIR / "train-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte\.gz: SHA-256") as err:
        data.load_fashion_mnist(tmp_path)
    assert "its content is the Fashion-MNIST file t10k-images-idx3-ubyte" in str(err.value)
    assert "swapped" in str(err.value)
    # Without checksums the count check still catches it, naming both files.
    with pytest.raises(data.DataError, match=r"10000 images but 60000 labels.*swapped"):
        data.load_fashion_mnist(tmp_path, verify=False)


# --------------------------------------------------------------------------- small IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_round_trip(tmp_path, rng, gz):
    arrays = make_idx_dir(tmp_path, rng, gz=gz)
    ds = data.load_fashion_mnist(tmp_path, verify=False)
    for split in ("train", "test"):
        images_name, labels_name = data.IDX_FILES[split]
        np.testing.assert_array_equal(getattr(ds, split).images, arrays[images_name])
        np.testing.assert_array_equal(getattr(ds, split).labels, arrays[labels_name])
        assert getattr(ds, split).labels.dtype == np.int32
    assert ds.source == f"idx:{tmp_path}"
    # With a digest map of our own the checksums are verified, and pass.
    ds2 = data.load_idx(tmp_path, sha256=digests(tmp_path))
    np.testing.assert_array_equal(ds2.train.images, ds.train.images)


def test_read_idx_other_dtypes_and_ranks(tmp_path, rng):
    array = rng.integers(-(2**31), 2**31 - 1, (3, 4, 5), dtype=np.int64).astype(np.int32)
    path = write_idx(tmp_path / "x-idx3-int", array)
    out = data.read_idx(path)
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    np.testing.assert_array_equal(data.read_idx(path, sha256=expected), array)
    with pytest.raises(data.DataError, match="SHA-256"):
        data.read_idx(path, sha256="0" * 64)


def test_tiny_files_fail_the_pinned_checksum(tmp_path, rng):
    make_idx_dir(tmp_path, rng)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte: SHA-256 [0-9a-f]{64}"):
        data.load_fashion_mnist(tmp_path)


def test_wrong_checksum_names_the_file(tmp_path, rng):
    make_idx_dir(tmp_path, rng, gz=True)
    sums = digests(tmp_path)
    sums["t10k-labels-idx1-ubyte"] = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(data.DataError) as err:
        data.load_idx(tmp_path, sha256=sums)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "does not match" in msg and "verify=False" in msg


@pytest.mark.parametrize("cut", [1, 500, 5000])
def test_truncated_file(tmp_path, rng, cut):
    make_idx_dir(tmp_path, rng)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(data.DataError, match=rf"{path}: truncated: .*shape \(12, 28, 28\)"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_truncated_header_and_trailing_bytes(tmp_path, rng):
    make_idx_dir(tmp_path, rng)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    good = path.read_bytes()
    path.write_bytes(good[:6])
    with pytest.raises(data.DataError, match="shorter than its header"):
        data.load_fashion_mnist(tmp_path, verify=False)
    path.write_bytes(good + b"\x00")
    with pytest.raises(data.DataError, match="trailing bytes"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_truncated_and_corrupt_gzip(tmp_path, rng):
    make_idx_dir(tmp_path, rng, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte\.gz: corrupt or truncated"):
        data.load_fashion_mnist(tmp_path, verify=False)
    path.write_bytes(good[:10] + bytes(b ^ 0xFF for b in good[10:]))
    with pytest.raises(data.DataError, match="corrupt or truncated gzip"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_not_an_idx_file(tmp_path, rng):
    make_idx_dir(tmp_path, rng)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte: not an IDX file"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_labels_where_images_expected(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng)
    write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train-labels-idx1-ubyte"])
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path, verify=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte: wrong magic number 2049 (a labels file)" in msg
    assert "must be an images file (2051)" in msg and "swapped" in msg


def test_images_where_labels_expected(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["t10k-images-idx3-ubyte"])
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte: wrong magic number 2051"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_train_test_labels_swapped(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(data.DataError, match=r"12 images but 5 labels.*train/test swapped"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_wrong_image_size_and_label_range(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 32, 32), np.uint8))
    with pytest.raises(data.DataError, match=r"images of size \(32, 32\)"):
        data.load_fashion_mnist(tmp_path, verify=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte"])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 3, 10], np.uint8))
    with pytest.raises(data.DataError, match=r"labels outside 0\.\.9 \(min 0, max 10\)"):
        data.load_fashion_mnist(tmp_path, verify=False)


def test_missing_file_in_named_dir(tmp_path, rng):
    make_idx_dir(tmp_path, rng)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(data.DataNotFoundError, match="lacks Fashion-MNIST files: t10k-images"):
        data.load_fashion_mnist(tmp_path, verify=False)
    assert issubclass(data.DataNotFoundError, FileNotFoundError)
    assert issubclass(data.DataNotFoundError, data.DataError)
    assert issubclass(data.DataError, ValueError)


def test_uncompressed_preferred_and_gzip_told_by_content(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng, gz=True)
    # An uncompressed file beside the .gz wins; a gzip file under a plain name is still read.
    flipped = 255 - arrays["train-images-idx3-ubyte"]
    write_idx(tmp_path / "train-images-idx3-ubyte", flipped)
    gz_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz_path.rename(tmp_path / "t10k-labels-idx1-ubyte")
    ds = data.load_fashion_mnist(tmp_path, verify=False)
    np.testing.assert_array_equal(ds.train.images, flipped)
    np.testing.assert_array_equal(ds.test.labels, arrays["t10k-labels-idx1-ubyte"])


# --------------------------------------------------------------------------- source selection


def test_bad_arguments():
    with pytest.raises(ValueError, match="source must be one of"):
        data.load_fashion_mnist(source="torchvision")
    with pytest.raises(TypeError, match="data_dir must be"):
        data.load_fashion_mnist(data_dir=3)
    with pytest.raises(TypeError, match="verify and download must be bools"):
        data.load_fashion_mnist(verify="yes")
    with pytest.raises(ValueError, match="pass tfds_data_dir"):
        data.load_fashion_mnist("/somewhere", source="tfds")


def test_no_data_anywhere(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "absent")
    first_lines = {}
    for source in ("auto", "idx"):
        with pytest.raises(data.DataNotFoundError) as err:
            data.load_fashion_mnist(source=source, tfds_data_dir=tmp_path / "tfds")
        msg = str(err.value)
        assert "apt-get install dataset-fashion-mnist" in msg
        assert "JAXCONV_DATA_DIR" in msg and "tfds" in msg and "tensorflow-datasets" in msg
        assert f"none in {tmp_path / 'absent'}" in msg
        first_lines[source] = msg.split("\n")[0]
    tfds_dir = tmp_path / "tfds" / "fashion_mnist"
    if importlib.util.find_spec("tensorflow_datasets") is not None:
        assert f"'fashion_mnist' is not prepared in {tfds_dir}" in first_lines["auto"]


@pytest.mark.parametrize("how", ["argument", "env", "debian"])
def test_auto_picks_idx_and_logs_one_line(tmp_path, rng, monkeypatch, caplog, how):
    chosen, other = tmp_path / "chosen", tmp_path / "other"
    arrays = make_idx_dir(chosen, rng)
    make_idx_dir(other, rng)
    # The Debian folder is the lowest IDX priority: it holds the *other* files unless chosen.
    monkeypatch.setattr(data, "DEBIAN_DIR", chosen if how == "debian" else other)
    if how == "env":
        monkeypatch.setenv(data.ENV_VAR, str(chosen))
    caplog.set_level(logging.INFO, logger="jaxconv.data")
    ds = data.load_fashion_mnist(chosen if how == "argument" else None, verify=False)
    np.testing.assert_array_equal(ds.train.images, arrays["train-images-idx3-ubyte"])
    assert ds.source == f"idx:{chosen}"
    (record,) = jaxconv_records(caplog)
    assert record.levelno == logging.INFO
    want = {"argument": "data_dir argument", "env": "$JAXCONV_DATA_DIR", "debian": "Debian"}[how]
    assert str(chosen) in record.getMessage() and want in record.getMessage()
    assert "not verified" in record.getMessage()


def test_argument_beats_env(tmp_path, rng, monkeypatch):
    arrays = make_idx_dir(tmp_path / "arg", rng)
    make_idx_dir(tmp_path / "env", rng)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    ds = data.load_fashion_mnist(tmp_path / "arg", verify=False)
    np.testing.assert_array_equal(ds.test.labels, arrays["t10k-labels-idx1-ubyte"])


def test_named_dir_without_files_is_not_skipped(tmp_path, rng, monkeypatch):
    make_idx_dir(tmp_path / "debian", rng)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(data.DataNotFoundError, match=rf"{tmp_path / 'empty'} lacks"):
        data.load_fashion_mnist(verify=False)


# --------------------------------------------------------------------------- tensorflow-datasets


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def write_tfds_metadata(tfds, root: Path, file_format="array_record", counts=(12, 5)) -> Path:
    """A prepared-looking tfds dir (metadata only, written without TensorFlow) for mock_data."""
    builder = tfds.builder("fashion_mnist", data_dir=str(root), file_format=file_format)
    split_infos = [
        tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
        for name, n in zip(("train", "test"), counts, strict=True)
    ]
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    return root


def test_tfds_mock_loads_without_tensorflow(tfds, tmp_path, no_network, caplog):
    meta = write_tfds_metadata(tfds, tmp_path / "meta")
    caplog.set_level(logging.INFO, logger="jaxconv.data")
    with tfds.testing.mock_data(num_examples=9, data_dir=str(meta)):
        ds = data.load_fashion_mnist(source="tfds", tfds_data_dir=tmp_path / "x", verify=False)
    if not HAS_TF:
        assert "tensorflow" not in sys.modules  # nothing on this path imported it
    for split in (ds.train, ds.test):
        assert split.images.shape == (9, 28, 28) and split.images.dtype == np.uint8
        assert split.labels.shape == (9,) and split.labels.dtype == np.int32
        assert 0 <= split.labels.min() and split.labels.max() <= 9
        assert len(np.unique(split.images.reshape(9, -1), axis=0)) > 1  # random, not constant
    assert ds.source.startswith("tfds:") and ds.source.endswith("fashion_mnist/3.0.1")
    assert ds.class_names == data.CLASS_NAMES
    (record,) = jaxconv_records(caplog)
    assert "tfds:" in record.getMessage()


def test_tfds_mock_fails_verification(tfds, tmp_path, no_network):
    meta = write_tfds_metadata(tfds, tmp_path / "meta")
    with tfds.testing.mock_data(num_examples=9, data_dir=str(meta)):
        with pytest.raises(data.DataError, match=r"split train: its 9 examples are not"):
            data.load_fashion_mnist(source="tfds")


def test_auto_falls_back_to_tfds(tfds, tmp_path, monkeypatch, no_network, caplog):
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "absent")
    meta = write_tfds_metadata(tfds, tmp_path / "meta")
    caplog.set_level(logging.INFO, logger="jaxconv.data")
    with tfds.testing.mock_data(num_examples=4, data_dir=str(meta)):
        ds = data.load_fashion_mnist(verify=False)
    assert ds.source.startswith("tfds:") and len(ds.train) == 4
    (record,) = jaxconv_records(caplog)
    assert "tensorflow-datasets (no IDX folder found)" in record.getMessage()


def test_tfds_never_downloads_by_default(tfds, tmp_path, monkeypatch, no_network):
    def forbidden(*args, **kwargs):
        raise AssertionError("download_and_prepare called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)
    with pytest.raises(data.DataNotFoundError, match="not prepared, and download=False"):
        data.load_fashion_mnist(source="tfds", tfds_data_dir=tmp_path / "empty")
    if not HAS_TF:
        # Asked to download, it still refuses up front: preparing needs TensorFlow.
        with pytest.raises(data.DataNotFoundError, match="needs TensorFlow"):
            data.load_fashion_mnist(source="tfds", tfds_data_dir=tmp_path / "empty", download=True)


def test_tfds_tfrecord_without_tensorflow(tfds, tmp_path, no_network):
    if HAS_TF:
        pytest.skip("TensorFlow is installed: TFRecord is readable")
    root = write_tfds_metadata(tfds, tmp_path / "tfr", file_format="tfrecord")
    with pytest.raises(data.DataError, match=r"needs TensorFlow.*file_format=array_record"):
        data.load_fashion_mnist(source="tfds", tfds_data_dir=root)


# --------------------------------------------------------------------------- on-device batching


def tagged(n: int):
    """Images whose pixels encode their index, and labels equal to it: pairing is checkable."""
    idx = np.arange(n, dtype=np.int32)
    images = (idx[:, None, None] * np.ones((1, 4, 3), np.int32)).astype(np.int32)
    images = images + np.arange(12, dtype=np.int32).reshape(1, 4, 3) * 1000
    return images, idx


def _shuffle_jit():
    return jax.jit(data.shuffle_batches, static_argnames="batch_size")


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_shuffle_batches_is_a_paired_permutation(jitted):
    images, labels = tagged(103)
    fn = _shuffle_jit() if jitted else data.shuffle_batches
    xb, yb = fn(jax.random.key(3), images, labels, batch_size=10)
    assert xb.shape == (10, 10, 4, 3) and yb.shape == (10, 10)
    flat = np.asarray(yb).ravel()
    assert len(np.unique(flat)) == 100 and flat.min() >= 0 and flat.max() < 103  # once each
    np.testing.assert_array_equal(np.asarray(xb), images[np.asarray(yb)])  # pairs kept
    assert not np.array_equal(flat, np.arange(100))  # actually shuffled


def test_shuffle_batches_deterministic_per_key_and_jit_matches_eager():
    images, labels = tagged(64)
    key = jax.random.PRNGKey(7)  # raw uint32 keys work as well as typed ones
    eager = data.shuffle_batches(key, images, labels, 16)
    again = data.shuffle_batches(key, images, labels, 16)
    jitted = _shuffle_jit()(key, images, labels, batch_size=16)
    other = data.shuffle_batches(jax.random.PRNGKey(8), images, labels, 16)
    for a, b in zip(eager, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(eager[1], other[1])


def test_shuffle_batches_traces_once_and_runs_inside_an_epoch_function():
    traces = []

    @jax.jit
    def epoch_label_sum(key, images, labels):
        traces.append(1)
        _, yb = data.shuffle_batches(key, images, labels, batch_size=8)
        return jax.lax.scan(lambda c, y: (c + y.sum(), None), 0, yb)[0]

    images, labels = tagged(40)
    total = [int(epoch_label_sum(jax.random.key(k), images, labels)) for k in range(3)]
    assert len(traces) == 1
    assert total == [sum(range(40))] * 3  # 40 = 5 * 8: no remainder, every label once


def test_shuffle_batches_drop_remainder_is_uniform():
    """Over many keys each example is dropped about as often as any other."""
    images, labels = tagged(12)
    fn = jax.jit(jax.vmap(lambda k: data.shuffle_batches(k, images, labels, 5)[1]))
    kept = np.asarray(fn(jax.random.split(jax.random.key(0), 2000))).reshape(2000, -1)
    counts = np.bincount(kept.ravel(), minlength=12) / 2000  # expected 10/12 each
    np.testing.assert_allclose(counts, 10 / 12, atol=0.04)


def test_batching_argument_errors():
    images, labels = tagged(10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size 11 exceeds the 10 examples"):
        data.shuffle_batches(key, images, labels, 11)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.pad_to_batches(images, labels, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        data.pad_to_batches(images, labels, 2.0)
    with pytest.raises(ValueError, match="as many examples, got 10 and 9"):
        data.shuffle_batches(key, images, labels[:9], 2)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        jax.jit(data.shuffle_batches)(key, images, labels, 2)  # not static


@pytest.mark.parametrize("n, batch_size", [(23, 5), (20, 5), (3, 8)])
def test_pad_to_batches_covers_every_example(rng, n, batch_size):
    images, labels = tagged(n)
    fn = jax.jit(data.pad_to_batches, static_argnames="batch_size")
    xb, yb, mask = fn(images, labels, batch_size=batch_size)
    nb = -(-n // batch_size)
    assert xb.shape == (nb, batch_size, 4, 3) and yb.shape == mask.shape == (nb, batch_size)
    assert mask.dtype == jnp.bool_ and int(mask.sum()) == n
    np.testing.assert_array_equal(np.asarray(yb)[np.asarray(mask)], labels)
    np.testing.assert_array_equal(np.asarray(xb)[np.asarray(mask)], images)
    assert not np.asarray(xb)[~np.asarray(mask)].any()  # zero padding
    # A masked mean over the batches is the mean over the examples.
    values = rng.normal(size=n).astype(np.float32)
    vb, _, m = data.pad_to_batches(values, labels, batch_size)
    np.testing.assert_allclose(float((vb * m).sum() / m.sum()), values.mean(), rtol=1e-5)


def test_real_on_device_epoch(real):
    images, labels = data.to_device(real.train)
    assert isinstance(images, jax.Array) and images.dtype == jnp.uint8
    xb, yb = _shuffle_jit()(jax.random.key(0), images, labels, batch_size=256)
    assert xb.shape == (234, 256, 28, 28) and yb.shape == (234, 256)
    # Class balance survives: 234 * 256 = 59,904 of 60,000 kept.
    counts = np.bincount(np.asarray(yb).ravel(), minlength=10)
    assert counts.sum() == 59_904 and counts.min() >= 6000 - 96


# --------------------------------------------------------------------------- subset and Split


def test_subset(tmp_path, rng):
    arrays = make_idx_dir(tmp_path, rng)
    ds = data.load_fashion_mnist(tmp_path, verify=False)
    small = data.subset(ds, 7, None)
    assert len(small.train) == 7 and len(small.test) == 5
    np.testing.assert_array_equal(small.train.images, arrays["train-images-idx3-ubyte"][:7])
    assert small.source == f"{ds.source} [first 7/5]" and small.class_names == ds.class_names
    with pytest.raises(ValueError, match=r"n_test must be in 1\.\.5, got 6"):
        data.subset(ds, 2, 6)
    with pytest.raises(TypeError, match="n_train must be an int"):
        data.subset(ds, 2.5, 1)
    with pytest.raises(ValueError, match=r"train_subset must be in 1\.\.12, got 13"):
        data.subset(ds, 13, None, names=("train_subset", "test_subset"))


def test_load_with_subsets_logs_the_sizes_used(tmp_path, rng, caplog):
    """The data line gives the sizes the run uses, not the whole set's."""
    make_idx_dir(tmp_path, rng)
    with caplog.at_level(logging.INFO, logger="jaxconv.data"):
        ds = data.load_fashion_mnist(tmp_path, verify=False, train_subset=7, test_subset=3)
    assert (len(ds.train), len(ds.test)) == (7, 3)
    (line,) = [r.getMessage() for r in caplog.records if "Fashion-MNIST from" in r.getMessage()]
    assert "train 7, test 3" in line and "[first 7/3]" in line
    with pytest.raises(ValueError, match=r"train_subset must be in 1\.\.12, got 100"):
        data.load_fashion_mnist(tmp_path, verify=False, train_subset=100)


def test_errors_about_a_given_data_dir_name_it(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="^data_dir '.*': .* lacks Fashion-MNIST"):
        data.load_fashion_mnist(tmp_path)


def test_split_validates_its_fields():
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="labels must be an int32 array"):
        data.Split(images, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="images must be a uint8 array"):
        data.Split(images.astype(np.float32), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="3 images and 2 labels"):
        data.Split(images, np.zeros(2, np.int32))
