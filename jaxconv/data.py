"""Fashion-MNIST, the chapter's data set: verified loading and on-device batching.

Two sources, one result (:class:`FashionMNIST`: uint8 images ``(n, 28, 28)``, int32 labels
``(n,)``, the ten class names):

- ``"idx"``: the original IDX files (``train-images-idx3-ubyte`` and the three others, gzipped
  or not) in a directory: the ``data_dir`` argument, else ``$JAXCONV_DATA_DIR``, else
  ``/usr/share/datasets/fashion-mnist`` where Debian's package ``dataset-fashion-mnist`` puts
  them. With ``verify=True`` the SHA-256 of each file's *decompressed* bytes must match the pin
  below (Debian re-compressed the files, so the ``.gz`` bytes differ from upstream's).
- ``"tfds"``: tensorflow-datasets' ``fashion_mnist``, read through ``as_data_source`` (ArrayRecord),
  which needs neither TensorFlow nor the network. A data set that TensorFlow prepared in its
  default TFRecord format, and preparing one (``download=True``), need TensorFlow. tfds stores the
  examples in another order than the IDX files; ``verify=True`` checks them with an order-free
  digest (:func:`example_set_sha256`).

``source="auto"`` takes the first that is there, in the order above, and says which in one
``logging`` line (logger ``"jaxconv.data"``). A directory you name (argument or environment
variable) is never skipped silently: if it lacks the files you get an error. Nothing reaches the
network unless you pass ``download=True``.

Every problem with the data raises :class:`DataError` (a ``ValueError``) naming the file and
what to do; missing data raises its subclass :class:`DataNotFoundError`, which is also a
``FileNotFoundError``.

The whole set (47 MB as uint8) fits on any accelerator, so training keeps it there; the
batching on device (:func:`to_device`, :func:`shuffle_batches`, :func:`pad_to_batches`) lives in
:mod:`jaxconv.batching` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import logging
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxconv._args import as_int
from jaxconv.batching import pad_to_batches, shuffle_batches, to_device
from jaxconv.errors import ArgumentError, ConfigError

logger = logging.getLogger("jaxconv.data")

#: d2l's names for the ten labels, in label order.
CLASS_NAMES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
SOURCES = ("auto", "idx", "tfds")
ENV_VAR = "JAXCONV_DATA_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
TFDS_NAME = "fashion_mnist"

#: IDX file names (without ``.gz``) of each split: (images, labels).
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_EXAMPLES = {"train": 60_000, "test": 10_000}
IMAGE_SHAPE = (28, 28)
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

#: SHA-256 of each file's decompressed bytes: sizes 47,040,016 / 60,008 / 7,840,016 / 10,008.
#: Computed from Debian's files (dataset-fashion-mnist 0.0~git20200523.55506a9-1); they have
#: upstream's sizes and headers, 6,000 / 1,000 labels per class, and independent projects pin
#: the same four digests for files whose .gz matched upstream's published MD5s.
FASHION_MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: :func:`example_set_sha256` of each split of the verified IDX files; checks data from tfds,
#: which holds the same examples in another order.
EXAMPLE_SET_SHA256: dict[str, str] = {
    "train": "4bc58f5926b1420d49344d02d6e71205a6644e54f0d302bc45b3918681b3998e",
    "test": "81875622ad6afb3e0bbaab6b5725f6f1d7759c18ac59f6306006d04c25bd7d29",
}

_NO_DATA_HELP = (
    "To get the data, do one of:\n"
    f"  - sudo apt-get install {DEBIAN_PACKAGE}   (Debian/Ubuntu: the IDX files in {DEBIAN_DIR})\n"
    "  - put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz\n"
    "    and t10k-labels-idx1-ubyte.gz (or the uncompressed files) in a directory and pass\n"
    f"    data_dir=... or set the environment variable {ENV_VAR}\n"
    "  - tensorflow-datasets: a prepared tfds data dir (tfds_data_dir=..., or TFDS_DATA_DIR),\n"
    f"    or load_fashion_mnist(source='tfds', download=True) to fetch '{TFDS_NAME}'\n"
    "    (needs internet, and TensorFlow to prepare it)"
)


class DataError(ArgumentError):
    """The data is missing, corrupt, truncated, swapped or does not match its checksum.

    Its remedies name :func:`load_fashion_mnist`'s arguments (``data_dir=...``,
    ``verify=False``) as :class:`jaxconv.errors.ArgumentError` mentions, so the command line
    can name its flags instead.
    """

    MENTIONS = ("data_dir=...", "verify=False", "data_dir")

    def __init__(self, message: str) -> None:
        super().__init__(message, self.MENTIONS)


class DataNotFoundError(DataError, FileNotFoundError):
    """No data where it was looked for; the message says where and how to get it."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class Split:
    """One split: ``images`` ``(n, h, w)`` uint8 and ``labels`` ``(n,)`` int32."""

    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) int32

    def __post_init__(self) -> None:
        if np.ndim(self.images) != 3 or np.asarray(self.images).dtype != np.uint8:
            raise ValueError(
                f"images must be a uint8 array (n, height, width), got "
                f"{np.asarray(self.images).dtype} {np.shape(self.images)}"
            )
        if np.ndim(self.labels) != 1 or np.asarray(self.labels).dtype != np.int32:
            raise ValueError(
                f"labels must be an int32 array (n,), got "
                f"{np.asarray(self.labels).dtype} {np.shape(self.labels)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"images and labels must hold as many examples, got {len(self.images)} images "
                f"and {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class FashionMNIST:
    """Both splits, the class names (index = label) and where the data came from."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    source: str  # e.g. "idx:/usr/share/datasets/fashion-mnist" or "tfds:<dir>/fashion_mnist/3.0.1"


# --------------------------------------------------------------------------- IDX files
# IDX is a 4-byte magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, then the data.
# Parsing it is a few lines; what matters is checking every field before trusting it.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_idx_file(directory: str | os.PathLike, name: str) -> Path | None:
    """Return ``directory/name`` or ``directory/name.gz`` (the uncompressed one first), or None."""
    for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, gunzipped if they are gzip data (told by content, not by name)."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:  # truncated stream, bad header, bad deflate
        raise DataError(
            f"{path}: corrupt or truncated gzip file ({err}); download or reinstall it"
        ) from err


def _parse_idx(data: bytes, where: str) -> tuple[int, np.ndarray]:
    """Check an IDX header against the data's length; return ``(magic, array)``."""
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{where}: not an IDX file (first bytes {data[:4].hex() or 'none'}; an IDX file "
            "starts with 00 00, a type code and the number of dimensions)"
        )
    magic = int.from_bytes(data[:4], "big")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated: {len(data)} bytes, shorter than its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    want = header + math.prod(shape) * dtype.itemsize
    if len(data) != want:
        what = "truncated" if len(data) < want else "has trailing bytes"
        raise DataError(
            f"{where}: {what}: the header says shape {shape} ({want} bytes), the file has "
            f"{len(data)} bytes; download or reinstall it"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return magic, array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike, *, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its own dtype and shape.

    With ``sha256``, the digest of the decompressed bytes must match. Raises :class:`DataError`
    naming the file for a bad header, a wrong length, or a checksum mismatch.
    """
    data = read_file_bytes(path)
    _, array = _parse_idx(data, str(path))
    if sha256 is not None:
        _check_sha256(data, sha256, str(path), None)
    return array


def _check_sha256(data: bytes, expected: str, where: str, name: str | None) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got == expected:
        return
    # A digest we know under another name means a swapped or misnamed file: say which.
    known = {digest: other for other, digest in FASHION_MNIST_SHA256.items()}
    hint = (
        f"its content is the Fashion-MNIST file {known[got]}: files swapped or misnamed"
        if got in known and known[got] != name
        else "the file is corrupt or not Fashion-MNIST's; download or reinstall it, or pass "
        "verify=False for data you trust"
    )
    raise DataError(f"{where}: SHA-256 {got} does not match the expected {expected}; {hint}")


def _read_role(path: Path, name: str, role: str, sha256: Mapping[str, str] | None) -> np.ndarray:
    """Read the images or labels file ``name`` at ``path`` and check it is one."""
    data = read_file_bytes(path)
    magic, array = _parse_idx(data, str(path))
    want_magic = IMAGES_MAGIC if role == "images" else LABELS_MAGIC
    if magic != want_magic:
        kinds = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}
        raise DataError(
            f"{path}: wrong magic number {magic} ({kinds.get(magic, 'unknown kind')}); {name} "
            f"must be {kinds[want_magic]} ({want_magic}): files swapped or misnamed?"
        )
    if role == "images" and array.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path}: images of size {array.shape[1:]}, expected {IMAGE_SHAPE}")
    if sha256 is not None:
        if name not in sha256:
            raise ValueError(f"sha256 has no digest for {name!r}; it has {sorted(sha256)}")
        _check_sha256(data, sha256[name], str(path), name)
    return array


def load_idx(
    directory: str | os.PathLike, *, sha256: Mapping[str, str] | None = FASHION_MNIST_SHA256
) -> FashionMNIST:
    """Load the four IDX files in ``directory`` (each ``name`` or ``name.gz``).

    Args:
      directory: the folder holding the files of :data:`IDX_FILES`.
      sha256: file name (no ``.gz``) -> SHA-256 of its decompressed bytes, or None to check
        headers and counts only (for IDX files of your own).

    Returns:
      :class:`FashionMNIST` with ``source="idx:<directory>"``.
    """
    directory = Path(directory).expanduser()
    names = [name for pair in IDX_FILES.values() for name in pair]
    paths = {name: find_idx_file(directory, name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DataNotFoundError(
            f"{directory} lacks Fashion-MNIST files: {', '.join(missing)} (or .gz).\n"
            + _NO_DATA_HELP
        )
    splits = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images = _read_role(paths[images_name], images_name, "images", sha256)
        labels = _read_role(paths[labels_name], labels_name, "labels", sha256)
        where = f"{paths[images_name]} and {paths[labels_name]}"
        splits[split] = _make_split(images, labels, where)
    return FashionMNIST(splits["train"], splits["test"], CLASS_NAMES, f"idx:{directory}")


def _make_split(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
    """Check counts and label range, and freeze the arrays into a :class:`Split`."""
    if len(images) != len(labels):
        raise DataError(
            f"{where}: {len(images)} images but {len(labels)} labels: files from different "
            "splits (train/test swapped?)"
        )
    if labels.size and not (0 <= labels.min() and labels.max() < len(CLASS_NAMES)):
        raise DataError(
            f"{where}: labels outside 0..{len(CLASS_NAMES) - 1} "
            f"(min {labels.min()}, max {labels.max()})"
        )
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    images.setflags(write=False)  # the data set is frozen; copy to modify
    labels.setflags(write=False)
    return Split(images, labels)


def example_set_sha256(split: Split) -> str:
    """SHA-256 of a split's examples independent of their order.

    Each example becomes its 784 pixel bytes plus its label byte; the rows are sorted bytewise
    and hashed together. Equal for the IDX files and for tfds, which stores them shuffled.
    """
    n = len(split)
    rows = np.concatenate(
        [split.images.reshape(n, -1), split.labels.astype(np.uint8)[:, None]], axis=1
    )  # (n, 785)
    rows = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    return hashlib.sha256(np.sort(rows).tobytes()).hexdigest()


# --------------------------------------------------------------------------- tensorflow-datasets


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataNotFoundError(
            "source='tfds' needs tensorflow-datasets: pip install tensorflow-datasets"
        ) from err
    return tfds


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _tfds_builder(tfds_data_dir: str | os.PathLike | None) -> Any:
    tfds = _import_tfds()
    data_dir = None if tfds_data_dir is None else os.fspath(Path(tfds_data_dir).expanduser())
    return tfds.builder(TFDS_NAME, data_dir=data_dir)


def _tfds_ready(tfds_data_dir: str | os.PathLike | None, download: bool) -> tuple[bool, str]:
    """Whether tfds can serve the data without asking; and a note for the not-found message."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False, "tensorflow-datasets is not installed"
    try:
        builder = _tfds_builder(tfds_data_dir)
        prepared = builder.is_prepared()
    except Exception as err:  # a broken tfds install or data dir: report it, do not crash auto
        return False, f"tensorflow-datasets failed: {type(err).__name__}: {err}"
    if prepared or download:
        return True, ""
    return False, f"tfds '{TFDS_NAME}' is not prepared in {builder.data_dir}"


def load_tfds(
    tfds_data_dir: str | os.PathLike | None = None, *, download: bool = False, verify: bool = True
) -> FashionMNIST:
    """Load ``fashion_mnist`` from tensorflow-datasets as NumPy arrays.

    A data set prepared in ArrayRecord (``tfds build fashion_mnist --file_format=array_record``)
    is read with ``as_data_source``: no TensorFlow. One in TFRecord, tfds' default, is read
    with ``as_dataset`` and needs TensorFlow. Only ``download=True`` may fetch (and prepare,
    which needs TensorFlow) the data.

    Args:
      tfds_data_dir: tfds' ``data_dir``; None means its default (``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      download: allow tfds to download and prepare the data set if it is not there.
      verify: check each split's :func:`example_set_sha256` against the pinned digest.
    """
    builder = _tfds_builder(tfds_data_dir)
    where = f"tfds '{TFDS_NAME}' in {builder.data_dir}"
    if not builder.is_prepared():
        if not download:
            raise DataNotFoundError(
                f"{where}: not prepared, and download=False keeps tfds off the network.\n"
                + _NO_DATA_HELP
            )
        if not _has_tensorflow():
            raise DataNotFoundError(
                f"{where}: preparing '{TFDS_NAME}' needs TensorFlow (pip install tensorflow), "
                f"or use the IDX files: sudo apt-get install {DEBIAN_PACKAGE}"
            )
        builder.download_and_prepare()
    num_classes = builder.info.features["label"].num_classes
    if num_classes != len(CLASS_NAMES):
        raise DataError(f"{where}: {num_classes} classes, expected {len(CLASS_NAMES)}")
    file_format = builder.info.file_format
    splits = {}
    if file_format is not None and file_format.value in ("array_record", "parquet"):
        sources = builder.as_data_source(split=list(IDX_FILES))
        for split, source in zip(IDX_FILES, sources, strict=True):
            examples = [source[i] for i in range(len(source))]  # decodes each PNG (PIL)
            images = np.stack([np.asarray(ex["image"]) for ex in examples])
            labels = np.asarray([ex["label"] for ex in examples])
            splits[split] = _tfds_split(images, labels, f"{where}, split {split}")
    elif _has_tensorflow():
        tfds = _import_tfds()
        for split in IDX_FILES:
            arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
            splits[split] = _tfds_split(arrays["image"], arrays["label"], f"{where}, split {split}")
    else:
        raise DataError(
            f"{where}: stored as {file_format}, which needs TensorFlow to read: install "
            "tensorflow, or rebuild it with `tfds build fashion_mnist --file_format=array_record`"
        )
    if verify:
        for split, data in splits.items():
            got = example_set_sha256(data)
            if got != EXAMPLE_SET_SHA256[split]:
                raise DataError(
                    f"{where}, split {split}: its {len(data)} examples are not Fashion-MNIST's "
                    f"{split} split (order-free SHA-256 {got}, expected "
                    f"{EXAMPLE_SET_SHA256[split]}); rebuild it, or pass verify=False for data "
                    "you trust"
                )
    return FashionMNIST(splits["train"], splits["test"], CLASS_NAMES, f"tfds:{builder.data_dir}")


def _tfds_split(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
    n = len(images)
    if images.shape != (n, *IMAGE_SHAPE, 1) or images.dtype != np.uint8:
        raise DataError(
            f"{where}: images {images.dtype} {images.shape}, expected uint8 (n, 28, 28, 1)"
        )
    return _make_split(images.reshape(n, *IMAGE_SHAPE), labels, where)


# --------------------------------------------------------------------------- one entry point


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    source: str = "auto",
    *,
    verify: bool = True,
    tfds_data_dir: str | os.PathLike | None = None,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> FashionMNIST:
    """Load Fashion-MNIST: train 60,000 and test 10,000 uint8 ``(n, 28, 28)`` images, int32 labels.

    Args:
      data_dir: folder with the four IDX files (gzipped or not). Default: ``$JAXCONV_DATA_DIR``,
        else Debian's ``/usr/share/datasets/fashion-mnist``.
      source: ``"idx"``, ``"tfds"`` or ``"auto"`` (the first available of: ``data_dir``,
        ``$JAXCONV_DATA_DIR``, the Debian folder, tfds). A folder named by argument or
        environment variable is used or fails; it is never skipped.
      verify: check the pinned SHA-256 digests (IDX: of each decompressed file; tfds: of each
        split's examples, order-free). Headers, sizes, counts and label range are always checked.
      tfds_data_dir: tfds' ``data_dir`` (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: let tfds download and prepare the data (needs internet and TensorFlow). False by
        default: nothing reaches the network.
      train_subset, test_subset: keep only the first n examples of each split (None: all), as
        :func:`subset`; the log line gives the sizes kept.

    Returns:
      :class:`FashionMNIST`; ``source`` says where the data came from. One INFO log line on the
      ``"jaxconv.data"`` logger says the same.

    Raises:
      DataNotFoundError: no data where it looked; the message lists how to get it.
      DataError: a corrupt, truncated, swapped or mismatching file.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"data_dir must be a str, a path or None, got {type(data_dir).__name__}")
    if not isinstance(verify, bool) or not isinstance(download, bool):
        raise TypeError(f"verify and download must be bools, got {verify!r} and {download!r}")
    if source == "tfds" and data_dir is not None:
        raise ValueError("data_dir names an IDX folder; for source='tfds' pass tfds_data_dir")

    directory, why = _idx_directory(data_dir) if source != "tfds" else (None, "")
    if directory is None and source == "idx":
        raise DataNotFoundError(
            f"No Fashion-MNIST IDX files: no data_dir given, ${ENV_VAR} unset, and none in "
            f"{DEBIAN_DIR}.\n" + _NO_DATA_HELP
        )
    if directory is None and source == "auto":
        ready, note = _tfds_ready(tfds_data_dir, download)
        if not ready:
            raise DataNotFoundError(
                f"No Fashion-MNIST data found: no data_dir given, ${ENV_VAR} unset, none in "
                f"{DEBIAN_DIR}, and {note}.\n" + _NO_DATA_HELP
            )
        why = "tensorflow-datasets (no IDX folder found)"

    if directory is not None:
        try:
            ds = load_idx(directory, sha256=FASHION_MNIST_SHA256 if verify else None)
        except DataError as err:
            if data_dir is None:
                raise
            # say which argument named the folder (the CLI spells it as its flag)
            raise type(err)(f"data_dir {str(directory)!r}: {err}") from None
    else:
        ds = load_tfds(tfds_data_dir, download=download, verify=verify)
        why = why or "source='tfds'"
    if train_subset is not None or test_subset is not None:
        ds = subset(ds, train_subset, test_subset, names=("train_subset", "test_subset"))
    logger.info(
        "Fashion-MNIST from %s, via %s: train %d, test %d, %s",
        ds.source,
        why,
        len(ds.train),
        len(ds.test),
        "SHA-256 verified" if verify else "not verified (verify=False)",
    )
    return ds


def _idx_directory(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The IDX folder to use and why: argument, environment variable, Debian's, or none."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"${ENV_VAR}"
    names = [name for pair in IDX_FILES.values() for name in pair]
    if any(find_idx_file(DEBIAN_DIR, name) for name in names):
        return DEBIAN_DIR, f"Debian's {DEBIAN_PACKAGE}"
    return None, ""


def subset(
    ds: FashionMNIST,
    n_train: int | None,
    n_test: int | None,
    *,
    names: tuple[str, str] = ("n_train", "n_test"),
) -> FashionMNIST:
    """The first ``n_train`` training and ``n_test`` test examples (None: all), for quick runs.

    Raises:
      ConfigError: a count outside 1..len(split), named by ``names`` (the caller's spelling of
      the two counts, e.g. ``("train_subset", "test_subset")``).
    """

    def head(split: Split, n: int | None, name: str) -> Split:
        if n is None:
            return split
        n = as_int(n, name)
        if not 1 <= n <= len(split):
            raise ConfigError(name, f"must be in 1..{len(split)}, got {n}")
        return Split(split.images[:n], split.labels[:n])

    train, test = head(ds.train, n_train, names[0]), head(ds.test, n_test, names[1])
    return dataclasses.replace(
        ds, train=train, test=test, source=f"{ds.source} [first {len(train)}/{len(test)}]"
    )


__all__ = [
    "CLASS_NAMES",
    "DEBIAN_DIR",
    "ENV_VAR",
    "EXAMPLE_SET_SHA256",
    "FASHION_MNIST_SHA256",
    "IDX_FILES",
    "DataError",
    "DataNotFoundError",
    "FashionMNIST",
    "Split",
    "example_set_sha256",
    "find_idx_file",
    "load_fashion_mnist",
    "load_idx",
    "load_tfds",
    "pad_to_batches",
    "read_file_bytes",
    "read_idx",
    "shuffle_batches",
    "subset",
    "to_device",
]
