"""The lab's data loaders, each on its own fixture written in the real on-disk format.

References are computed here in float64 from the raw pixels (not with the loader's helpers):
standardized x = (raw − μ_c) / σ_c with μ_c, σ_c the per-channel mean and (population) standard
deviation of the raw training split.
"""

from __future__ import annotations

import datetime
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from PIL import Image

from normlab.errors import NormlabError
from normlab.lab import data as lab_data
from normlab.lab.data import DataSet, available_data, load_data


def standardized(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 reference: per-channel statistics of the raw training split."""
    axes = (0, *range(2, train.ndim))
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True)
    return (train - mean) / std, (test - mean) / std


def assert_standardized_like(got: torch.Tensor, want: np.ndarray) -> None:
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=1e-5, atol=1e-5)


# -- digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DataSet:
    return load_data("digits")


def test_digits_shapes_split_and_description(digits: DataSet) -> None:
    from sklearn.datasets import load_digits

    raw_y = load_digits().target
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_test.shape == (360, 1, 8, 8)
    assert digits.input_shape == (1, 8, 8)
    assert digits.y_train.dtype == digits.y_test.dtype == torch.int64
    assert digits.num_classes == 10 and digits.name == "digits"
    assert "1437 train / 360 test" in digits.description and "1x8x8" in digits.description
    # Stratified: each class's share of the test split is its share of the whole set.
    counts = np.bincount(raw_y, minlength=10)
    test_counts = digits.y_test.bincount(minlength=10).numpy()
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)


def test_digits_are_the_raw_digits_standardized_with_train_statistics(digits: DataSet) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x_train = digits.x_train.double().flatten(1).numpy()
    x_test = digits.x_test.double().flatten(1).numpy()
    # Undo the affine standardization from the known pixel range 0..16 of the training split.
    scale = 16.0 / (x_train.max() - x_train.min())
    shift = -x_train.min() * scale
    rec_train, rec_test = x_train * scale + shift, x_test * scale + shift
    np.testing.assert_allclose(rec_train, np.round(rec_train), atol=1e-4)
    assert abs(rec_train.mean() - shift) < 1e-4 * 16 and abs(rec_train.std() - scale) < 1e-4 * 16
    # The split is a partition of the raw rows (with their labels).
    got = np.concatenate([np.round(rec_train), np.round(rec_test)])
    got_y = np.concatenate([digits.y_train.numpy(), digits.y_test.numpy()])
    rows = sorted(map(tuple, np.column_stack([got, got_y]).tolist()))
    want = sorted(map(tuple, np.column_stack([raw.data, raw.target]).tolist()))
    assert rows == want


def test_digits_two_loads_are_equal(digits: DataSet) -> None:
    again = load_data("digits")
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)


def test_max_train_and_max_test_take_a_balanced_deterministic_subset() -> None:
    small = load_data("digits", max_train=100, max_test=35)
    assert small.x_train.shape == (100, 1, 8, 8) and small.x_test.shape == (35, 1, 8, 8)
    assert small.y_train.bincount(minlength=10).tolist() == [10] * 10
    assert set(small.y_test.bincount(minlength=10).tolist()) <= {3, 4}
    assert "100 (of 1437) train / 35 (of 360) test" in small.description
    mean, std = small.x_train.double().mean(), small.x_train.double().std(unbiased=False)
    assert abs(mean) < 1e-5 and abs(std - 1) < 1e-5  # statistics of the subset itself
    again = load_data("digits", max_train=100, max_test=35)
    assert torch.equal(again.x_train, small.x_train) and torch.equal(again.y_test, small.y_test)
    assert load_data("digits", max_train=10_000).x_train.shape[0] == 1437  # more than there is


# -- MNIST-1D -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_fresh() -> tuple[DataSet, tuple[object, ...], tuple[object, ...]]:
    """A load that really generates (cache cleared), with the global RNG states around it."""
    pytest.importorskip("mnist1d")
    lab_data._mnist1d_arrays.cache_clear()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    loaded = load_data("mnist1d")
    after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    return loaded, before, after


def test_mnist1d_shapes_and_standardization(mnist1d_fresh) -> None:
    from mnist1d.data import get_dataset_args

    d, _, _ = mnist1d_fresh
    args = get_dataset_args()
    n_test = round(args.num_samples * (1 - args.train_split))
    assert d.x_train.shape == (args.num_samples - n_test, 1, args.final_seq_length)
    assert d.x_test.shape == (n_test, 1, args.final_seq_length)
    assert d.num_classes == 10 and d.y_train.dtype == torch.int64
    assert set(d.y_train.unique().tolist()) == set(range(10))
    x = d.x_train.double()
    assert abs(x.mean()) < 1e-5 and abs(x.std(unbiased=False) - 1) < 1e-5


def test_mnist1d_is_mnist1d_generated_and_is_deterministic(mnist1d_fresh) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    d, _, _ = mnist1d_fresh
    states = random.getstate(), np.random.get_state()
    try:
        ref = make_dataset(get_dataset_args())  # seeds itself: the same data every time
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    want_train, want_test = standardized(ref["x"][:, None, :], ref["x_test"][:, None, :])
    assert_standardized_like(d.x_train, want_train)
    assert_standardized_like(d.x_test, want_test)
    assert d.y_train.tolist() == ref["y"].tolist() and d.y_test.tolist() == ref["y_test"].tolist()


def test_mnist1d_leaves_the_global_rngs_alone(mnist1d_fresh) -> None:
    _, before, after = mnist1d_fresh
    assert before[0] == after[0]
    assert all(np.array_equal(a, b) for a, b in zip(before[1][1:3], after[1][1:3], strict=True))
    assert torch.equal(before[2], after[2])


def test_mnist1d_cached_loads_are_independent(mnist1d_fresh) -> None:
    first = load_data("mnist1d")
    copy = first.x_train.clone()
    first.x_train.zero_()  # a caller writing into its tensors does not change the next load
    assert torch.equal(load_data("mnist1d").x_train, copy)


# -- synthetic ------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_not_trivial() -> None:
    a, b = load_data("synthetic"), load_data("synthetic")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert a.x_train.shape == (1440, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.y_train.bincount().tolist() == [144] * 10
    assert a.y_test.bincount().tolist() == [36] * 10
    # Learnable but not trivial: nearest class mean gets most, not all, test examples right.
    x = a.x_train.flatten(1).double()
    centroids = torch.stack([x[a.y_train == c].mean(0) for c in range(10)])
    pred = torch.cdist(a.x_test.flatten(1).double(), centroids).argmin(1)
    accuracy = (pred == a.y_test).double().mean().item()
    assert 0.4 < accuracy < 0.97


def test_synthetic_shift_differs_only_in_the_test_domain() -> None:
    source, target = load_data("synthetic"), load_data("synthetic-shift")
    assert torch.equal(source.x_train, target.x_train)
    assert torch.equal(source.y_train, target.y_train)
    assert torch.equal(source.y_test, target.y_test)
    assert not torch.allclose(source.x_test, target.x_test)
    # Same test images through an affine change of domain: x_t = a·x_s + b in standardized units,
    # with a the documented contrast and b != 0 (the brightness shift).
    xs, xt = source.x_test.double().flatten(), target.x_test.double().flatten()
    design = torch.stack([xs, torch.ones_like(xs)], 1)
    slope, offset = torch.linalg.lstsq(design, xt[:, None]).solution.flatten().tolist()
    assert slope == pytest.approx(lab_data.SHIFT_CONTRAST, rel=1e-5)
    assert abs(offset) > 0.3
    np.testing.assert_allclose(xt.numpy(), (slope * xs + offset).numpy(), atol=1e-5)


# -- CIFAR ----------------------------------------------------------------------------------------


def _write_pickle(path: Path, obj: object, *, numpy_core: bool = False) -> None:
    blob = pickle.dumps(obj, protocol=2)
    if numpy_core:  # the module name NumPy 1.x (and the real, Python 2 files) use
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(blob)


def _cifar_batch(rng: np.random.Generator, n: int, classes: int, label_key: bytes) -> dict:
    return {
        b"batch_label": b"fixture",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, size=n)],
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write_pickle(root / f"data_batch_{i}", _cifar_batch(rng, 4, 10, b"labels"))
    _write_pickle(root / "test_batch", _cifar_batch(rng, 6, 10, b"labels"), numpy_core=True)
    _write_pickle(root / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    return root


def _raw_cifar(files: list[Path], label_key: bytes) -> tuple[np.ndarray, list[int]]:
    batches = [pickle.loads(f.read_bytes(), encoding="bytes") for f in files]
    x = np.concatenate([b[b"data"] for b in batches]).astype(np.float64)
    return x.reshape(-1, 3, 32, 32), [v for b in batches for v in b[label_key]]


def test_cifar10_loads_the_pickle_layout(cifar10_dir: Path) -> None:
    d = load_data(f"cifar10:{cifar10_dir.parent}")  # the folder holding cifar-10-batches-py
    train_files = [cifar10_dir / f"data_batch_{i}" for i in range(1, 6)]
    x_train, y_train = _raw_cifar(train_files, b"labels")
    x_test, y_test = _raw_cifar([cifar10_dir / "test_batch"], b"labels")
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.num_classes == 10 and d.name == "cifar10"
    assert d.y_train.tolist() == y_train and d.y_test.tolist() == y_test
    want_train, want_test = standardized(x_train, x_test)
    assert_standardized_like(d.x_train, want_train)
    assert_standardized_like(d.x_test, want_test)
    same = load_data(f"cifar10:{cifar10_dir}")  # or the folder itself
    assert torch.equal(same.x_train, d.x_train) and torch.equal(same.y_test, d.y_test)


def test_cifar_accepts_str_keys_and_resizes(cifar10_dir: Path) -> None:
    rng = np.random.default_rng(1)
    batch = {k.decode(): v for k, v in _cifar_batch(rng, 4, 10, b"labels").items()}
    _write_pickle(cifar10_dir / "data_batch_2", batch)
    d = load_data(f"cifar10:{cifar10_dir}", image_size=16)
    assert d.x_train.shape == (20, 3, 16, 16) and d.y_train[4:8].tolist() == batch["labels"]


def test_cifar100_loads_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("train", 12), ("test", 5)):
        batch = _cifar_batch(rng, n, 100, b"fine_labels")
        batch[b"coarse_labels"] = [v // 5 for v in batch[b"fine_labels"]]
        _write_pickle(root / name, batch)
    _write_pickle(root / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)]})
    d = load_data(f"cifar100:{tmp_path}")
    x_train, y_train = _raw_cifar([root / "train"], b"fine_labels")
    x_test, y_test = _raw_cifar([root / "test"], b"fine_labels")
    assert d.num_classes == 100 and d.x_train.shape == (12, 3, 32, 32)
    assert d.y_train.tolist() == y_train and d.y_test.tolist() == y_test
    want_train, want_test = standardized(x_train, x_test)
    assert_standardized_like(d.x_train, want_train)
    assert_standardized_like(d.x_test, want_test)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("garbage", r"cannot read .*data_batch_3.*extract the archive again"),
        ("truncated", r"cannot read .*data_batch_3"),
        ("not_a_dict", r"data_batch_3 holds a list, not the dict of a CIFAR batch"),
        ("no_labels", r"data_batch_3 has no 'labels' entry"),
        ("wrong_size", r"'data' in .*data_batch_3 is a uint8 array of shape \(4, 100\)"),
        ("bad_labels", r"'labels' in .*data_batch_3 is not 4 ints in \[0, 10\)"),
        ("code", r"data_batch_3 .*datetime\.date object, not data"),
    ],
)
def test_cifar_corrupt_batch_is_one_clear_error(
    cifar10_dir: Path, damage: str, expected: str
) -> None:
    file = cifar10_dir / "data_batch_3"
    batch = _cifar_batch(np.random.default_rng(3), 4, 10, b"labels")
    if damage == "garbage":
        file.write_bytes(b"this is not a pickle")
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    elif damage == "not_a_dict":
        _write_pickle(file, [1, 2, 3])
    elif damage == "no_labels":
        del batch[b"labels"]
        _write_pickle(file, batch)
    elif damage == "wrong_size":
        batch[b"data"] = batch[b"data"][:, :100]
        _write_pickle(file, batch)
    elif damage == "bad_labels":
        batch[b"labels"] = [0, 1, 2, 10]
        _write_pickle(file, batch)
    else:
        _write_pickle(file, {b"data": datetime.date(2020, 1, 1)})
    with pytest.raises(NormlabError, match=expected) as info:
        load_data(f"cifar10:{cifar10_dir}")
    assert str(info.value).startswith(f"--data cifar10:{cifar10_dir}:")
    assert "\n" not in str(info.value)


def test_cifar_layout_errors(cifar10_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NormlabError, match=r"--data cifar10: cifar10 needs a path\. Use --data "):
        load_data("cifar10")
    missing = tmp_path / "nowhere"
    with pytest.raises(NormlabError, match=rf"the directory {missing} does not exist"):
        load_data(f"cifar10:{missing}")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(NormlabError, match=r"is a file, not a directory\. Extract the archive"):
        load_data(f"cifar10:{archive}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        NormlabError, match=r"no data_batch_1 in .*empty.*expected the python version of CIFAR-10"
    ):
        load_data(f"cifar10:{empty}")
    with pytest.raises(NormlabError, match=r"no train in .*cifar-100-python"):
        load_data(f"cifar100:{empty}")
    (cifar10_dir / "data_batch_4").unlink()
    with pytest.raises(NormlabError, match=r"no data_batch_4 in .*extract cifar-10-python"):
        load_data(f"cifar10:{cifar10_dir}")


# -- ImageFolder ----------------------------------------------------------------------------------

COLORS = {"cat": [(255, 0, 0), (200, 10, 30)], "dog": [(0, 0, 255), (40, 90, 10), (9, 9, 9)]}
TEST_COLORS = {"cat": [(10, 250, 10)], "dog": [(128, 128, 128)]}


def _write_folder(root: Path, split: str, colors: dict[str, list[tuple[int, int, int]]]) -> None:
    for name, values in colors.items():
        (root / split / name).mkdir(parents=True)
        for i, color in enumerate(values):
            size = (5 + i, 7)  # different sizes: every image is resized
            suffix = "bmp" if i == 1 else "png"  # lossless formats: the colours stay exact
            Image.new("RGB", size, color).save(root / split / name / f"{i}.{suffix}")


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _write_folder(root, "train", COLORS)
    _write_folder(root, "test", TEST_COLORS)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / ".hidden.png").write_bytes(b"ignored")
    (root / "train" / "README.md").write_text("a file beside the class folders")
    return root


def _solid(colors: dict[str, list[tuple[int, int, int]]], size: int) -> np.ndarray:
    pixels = [c for name in sorted(colors) for c in colors[name]]
    x = np.asarray(pixels, dtype=np.float64)[:, :, None, None] / 255.0
    return np.broadcast_to(x, (len(pixels), 3, size, size))


def test_folder_loads_images_resized_with_sorted_classes(folder_dir: Path) -> None:
    d = load_data(f"folder:{folder_dir}", image_size=6)
    assert d.x_train.shape == (5, 3, 6, 6) and d.x_test.shape == (2, 3, 6, 6)
    assert d.num_classes == 2 and d.name == "folder"
    assert d.y_train.tolist() == [0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 1]
    # Solid colours survive any resize exactly, so the reference needs no image library.
    want_train, want_test = standardized(_solid(COLORS, 6), _solid(TEST_COLORS, 6))
    assert_standardized_like(d.x_train, want_train)
    assert_standardized_like(d.x_test, want_test)


def test_folder_accepts_val_and_grayscale(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_folder(root, "train", COLORS)
    (root / "val" / "dog").mkdir(parents=True)  # a test split may lack some train classes
    Image.new("L", (3, 3), 77).save(root / "val" / "dog" / "g.png")
    d = load_data(f"folder:{root}", image_size=4)
    assert d.x_test.shape == (1, 3, 4, 4) and d.y_test.tolist() == [1]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("no_train", r"no train folder in .*Expected PATH/train/<class>/<image>"),
        ("no_test", r"no test \(or val\) folder in "),
        ("no_classes", r"test holds no class folders\. Expected "),
        ("empty_class", r"the class folder .*train/bird holds no images .*Add images to it"),
        ("unknown_test_class", r"has class folder\(s\) fox that .*train lacks"),
        ("unreadable", r"cannot read the image .*train/cat/broken\.png .*Replace or delete"),
    ],
)
def test_folder_errors(folder_dir: Path, breakage: str, expected: str) -> None:
    if breakage == "no_train":
        (folder_dir / "train").rename(folder_dir / "training")
    elif breakage == "no_test":
        (folder_dir / "test").rename(folder_dir / "testing")
    elif breakage == "no_classes":
        for cls in (folder_dir / "test").iterdir():
            for f in cls.iterdir():
                f.unlink()
            cls.rmdir()
    elif breakage == "empty_class":
        (folder_dir / "train" / "bird").mkdir()
        (folder_dir / "train" / "bird" / "list.txt").write_text("no images here")
    elif breakage == "unknown_test_class":
        (folder_dir / "test" / "fox").mkdir()
        Image.new("RGB", (2, 2)).save(folder_dir / "test" / "fox" / "f.png")
    else:
        (folder_dir / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(NormlabError, match=expected) as info:
        load_data(f"folder:{folder_dir}")
    assert str(info.value).startswith(f"--data folder:{folder_dir}:")


# -- names and arguments --------------------------------------------------------------------------


def test_available_data_lists_every_spec() -> None:
    names = available_data()
    assert {"digits", "mnist1d", "synthetic", "synthetic-shift"} <= set(names)
    assert {"cifar10:PATH", "cifar100:PATH", "folder:PATH"} <= set(names)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("digts", r"Unknown data set 'digts'\. Did you mean 'digits'\? Known: digits, mnist1d"),
        ("cifar1O:/x", r"Unknown data set 'cifar1O'\. Did you mean 'cifar10:PATH'"),
        ("folder", r"--data folder: folder needs a path\. Use --data folder:PATH"),
        ("digits:/data", r"--data digits:/data: digits is built in and takes no path\. Use "),
        ("", r"no data set named\. Pass one of: digits"),
    ],
)
def test_bad_data_names(spec: str, expected: str) -> None:
    with pytest.raises(NormlabError, match=expected):
        load_data(spec)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_train": 0}, r"--max-train must be a positive int; got 0\. Pass e\.g\."),
        ({"max_test": -3}, r"--max-test must be a positive int; got -3"),
        ({"image_size": 0}, r"image_size must be a positive int; got 0"),
    ],
)
def test_bad_sizes(kwargs: dict[str, int], expected: str) -> None:
    with pytest.raises(NormlabError, match=expected):
        load_data("synthetic", **kwargs)
