"""User data: CSV, Parquet, NPZ and image folders, and their error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from privguard.data import load_dataset
from privguard.errors import DataError

HEART = Path(__file__).parents[2] / "src/privguard/data/builtin_files/heart-disease.csv.gz"


@pytest.fixture(scope="module")
def heart() -> pd.DataFrame:
    """Real raw records with numbers, text, booleans and blanks."""
    return pd.read_csv(HEART)


# -- CSV and Parquet ----------------------------------------------------------------------------


def test_csv_round_trip_and_replay(heart: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "heart.csv"
    heart.to_csv(path, index=False)
    ds = load_dataset(str(path), label="num")
    assert ds.kind == "tabular" and len(ds) == 920
    assert ds.classes == ["0", "1", "2", "3", "4"]
    assert ds.x.min() >= 0 and ds.x.max() <= 1

    record = json.loads(json.dumps(ds.preprocessing))
    again = load_dataset(path, preprocessing=record)
    assert np.array_equal(again.x, ds.x) and np.array_equal(again.y, ds.y)
    assert again.feature_names == ds.feature_names

    # replayed on a new file holding some of the records, in another column order
    part = tmp_path / "part.csv"
    heart.iloc[500:600, ::-1].to_csv(part, index=False)
    sub = load_dataset(part, label="num", preprocessing=record)
    assert np.array_equal(sub.x, ds.x[500:600]) and np.array_equal(sub.y, ds.y[500:600])


def test_parquet_matches_csv(heart: pd.DataFrame, tmp_path: Path) -> None:
    heart.to_csv(tmp_path / "h.csv", index=False)
    heart.to_parquet(tmp_path / "h.parquet")
    from_csv = load_dataset(tmp_path / "h.csv", label="num")
    from_parquet = load_dataset(tmp_path / "h.parquet", label="num")
    assert np.array_equal(from_parquet.x, from_csv.x)
    assert from_parquet.feature_names == from_csv.feature_names
    replayed = load_dataset(tmp_path / "h.parquet", preprocessing=from_csv.preprocessing)
    assert np.array_equal(replayed.x, from_csv.x)


def test_table_errors(heart: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "heart.csv"
    heart.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"--label; columns are: age, sex"):
        load_dataset(path)
    with pytest.raises(DataError, match=r"no column 'income'; columns are: age, .*--label"):
        load_dataset(path, label="income")

    bad = tmp_path / "inf.csv"
    bad.write_text("a,b,y\n1,inf,0\n2,3,1\n3,-inf,0\n")
    with pytest.raises(DataError, match=r"column 'b' in inf.csv has 2 infinite value\(s\)"):
        load_dataset(bad, label="y")

    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "absent.csv", label="y")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_dataset(empty, label="y")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="could not read .* as a Parquet file"):
        load_dataset(junk, label="y")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_dataset(path.rename(tmp_path / "heart.csv.bak"))


# -- NPZ ----------------------------------------------------------------------------------------


def test_npz_tabular_and_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tab.npz", x=rng.normal(size=(30, 4)), y=np.arange(30) % 3)
    ds = load_dataset(tmp_path / "tab.npz")
    assert ds.kind == "tabular" and ds.x.shape == (30, 4) and ds.classes == ["0", "1", "2"]
    assert ds.bounds == (float(ds.x.min()), float(ds.x.max()))

    pixels = rng.integers(0, 256, size=(12, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", x=pixels, y=np.array(["cat", "dog", "ant"] * 4))
    ds = load_dataset(tmp_path / "gray.npz")
    assert ds.kind == "image" and ds.x.shape == (12, 1, 5, 6)
    assert np.array_equal(ds.x[:, 0], pixels.astype(np.float32) / 255)
    assert ds.classes == ["ant", "cat", "dog"] and ds.y[:3].tolist() == [1, 2, 0]

    rgb = rng.random((8, 3, 4, 4))
    np.savez(tmp_path / "rgb.npz", x=rgb, y=np.arange(8) % 2)
    ds = load_dataset(tmp_path / "rgb.npz")
    assert ds.x.shape == (8, 3, 4, 4) and np.allclose(ds.x, rgb)

    # replaying the class list: a file holding only "dog" records keeps dog's index
    np.savez(tmp_path / "dogs.npz", x=pixels[:2], y=np.array(["dog", "dog"]))
    record = json.loads(json.dumps(load_dataset(tmp_path / "gray.npz").preprocessing))
    assert load_dataset(tmp_path / "dogs.npz", preprocessing=record).y.tolist() == [2, 2]


def test_npz_errors(tmp_path: Path) -> None:
    x = np.zeros((6, 3))
    np.savez(tmp_path / "names.npz", inputs=x, labels=np.zeros(6))
    with pytest.raises(DataError, match="arrays named 'x'.*it holds: inputs, labels"):
        load_dataset(tmp_path / "names.npz")
    two = np.arange(6) % 2
    np.savez(tmp_path / "nan.npz", x=np.where(np.eye(6, 3) > 0, np.nan, 0.0), y=two)
    with pytest.raises(DataError, match="3 record.* NaN or infinite"):
        load_dataset(tmp_path / "nan.npz")
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(6, 2))
    with pytest.raises(DataError, match="y.argmax"):
        load_dataset(tmp_path / "onehot.npz")
    np.savez(tmp_path / "obj.npz", x=x, y=np.array([{"a": 1}] * 6, dtype=object))
    with pytest.raises(DataError, match="never unpickled"):
        load_dataset(tmp_path / "obj.npz")
    np.savez(tmp_path / "scale.npz", x=np.full((6, 4, 4), 200.0), y=two)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\].*divide by 255"):
        load_dataset(tmp_path / "scale.npz")
    np.savez(tmp_path / "ok.npz", x=x, y=np.zeros(6, dtype=int))
    with pytest.raises(DataError, match="--label applies to CSV"):
        load_dataset(tmp_path / "ok.npz", label="y")
    with pytest.raises(DataError, match=r"label\(s\) 0 that the model was not trained on"):
        load_dataset(
            tmp_path / "ok.npz",
            preprocessing={"type": "npz", "kind": "tabular", "classes": ["a", "b"]},
        )


def test_npz_labels_are_checked_before_anything_is_allocated_for_them(tmp_path: Path) -> None:
    x = np.zeros((4, 3))
    # one label of 10**12 once made a list of 10**12 class names (killed after 90 s)
    for y, found in [
        (np.array([0, 1, 2, 10**12]), "1000000000000;"),
        (np.array([0.0, 1.0, 1e12, 2.0]), "1000000000000;"),
        (np.array([0.0, 1.0, 1e12, 1e300]), "1e+300;"),
    ]:
        np.savez(tmp_path / "huge.npz", x=x, y=y)
        with pytest.raises(DataError, match=rf"class indices 0\.\.99999, found {re.escape(found)}"):
            load_dataset(tmp_path / "huge.npz")
    np.savez(tmp_path / "huge.npz", x=x, y=np.array([0, 1, 99_999, 100_000]))
    with pytest.raises(DataError, match="found 100000; renumber the classes"):
        load_dataset(tmp_path / "huge.npz")
    # the count is compared from the array headers, before either array is read
    np.savez(tmp_path / "count.npz", x=x, y=np.arange(5) % 2)
    with pytest.raises(DataError, match="x has 4 records but y has 5 labels"):
        load_dataset(tmp_path / "count.npz")
    # non-integral numbers are classes by value, in sorted order, not indices
    np.savez(tmp_path / "frac.npz", x=x, y=np.array([0.5, 1e12 + 0.5, 0.5, 2.25]))
    assert load_dataset(tmp_path / "frac.npz").classes == ["0.5", "2.25", "1000000000000.5"]


def test_a_one_class_npz_is_refused_like_a_one_class_csv(tmp_path: Path) -> None:
    for y in (np.zeros(6, dtype=int), np.full(6, 3), np.array(["cat"] * 6)):
        np.savez(tmp_path / "one.npz", x=np.zeros((6, 3)), y=y)
        with pytest.raises(DataError, match=r"single label .*at least two classes"):
            load_dataset(tmp_path / "one.npz")
    # replaying a trained model's classes, one class in a file is fine (e.g. an audit's members)
    record = {"type": "npz", "kind": "tabular", "classes": ["0", "1"]}
    np.savez(tmp_path / "one.npz", x=np.zeros((6, 3)), y=np.zeros(6, dtype=int))
    assert load_dataset(tmp_path / "one.npz", preprocessing=record).y.tolist() == [0] * 6


# -- image folders ------------------------------------------------------------------------------


def _faces(root: Path, classes: list[str], n: int = 2, size: tuple[int, int] = (6, 8)) -> None:
    """An AT&T-style folder: root/<class>/<i>.pgm with 8-bit grayscale images."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            pixels = np.full((size[1], size[0]), 10 * k + i, dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.pgm")


def test_image_folder_grayscale_natural_order(tmp_path: Path) -> None:
    _faces(tmp_path / "faces", ["s10", "s2", "s1"], n=2)
    (tmp_path / "faces" / "README.txt").write_text("not a class")
    Image.fromarray(np.full((8, 6), 255, np.uint8), mode="L").save(tmp_path / "faces/s2/3.png")
    ds = load_dataset(tmp_path / "faces")
    assert ds.kind == "image" and ds.classes == ["s1", "s2", "s10"]
    assert ds.x.shape == (7, 1, 8, 6) and ds.y.tolist() == [0, 0, 1, 1, 1, 2, 2]
    # s1 was created third (k=2): its first image has grey level 21
    assert np.all(ds.x[0] == np.float32(21 / 255)) and np.all(ds.x[4] == 1.0)
    assert ds.extra["file"][4] == str(Path("s2/3.png"))

    # replay on a folder that holds only some of the classes keeps their indices
    _faces(tmp_path / "later", ["s10"], n=1)
    later = load_dataset(tmp_path / "later", preprocessing=ds.preprocessing)
    assert later.y.tolist() == [2] and later.classes == ds.classes


def test_image_folder_colour(tmp_path: Path) -> None:
    _faces(tmp_path / "pics", ["a", "b"], n=1)
    red = np.zeros((8, 6, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red, mode="RGB").save(tmp_path / "pics/b/2.png")
    ds = load_dataset(tmp_path / "pics")
    assert ds.x.shape == (3, 3, 8, 6)
    assert np.all(ds.x[2, 0] == 1.0) and np.all(ds.x[2, 1:] == 0.0)
    assert np.all(ds.x[0] == np.float32(1 / 255))  # grey replicated over the channels


def test_image_folder_errors(tmp_path: Path) -> None:
    _faces(tmp_path / "mixed", ["s1", "s2"], n=1)
    Image.fromarray(np.zeros((9, 6), np.uint8), mode="L").save(tmp_path / "mixed/s2/2.pgm")
    with pytest.raises(DataError, match=r"s2/2.pgm is 6x9 but .*s1/1.pgm is 6x8.*resize them"):
        load_dataset(tmp_path / "mixed")

    _faces(tmp_path / "hole", ["s1"], n=1)
    (tmp_path / "hole" / "s2").mkdir()
    with pytest.raises(DataError, match="class folder .*s2 has no images"):
        load_dataset(tmp_path / "hole")

    _faces(tmp_path / "single", ["s1"], n=2)
    with pytest.raises(DataError, match=r"single class folder \('s1'\).*at least two classes"):
        load_dataset(tmp_path / "single")

    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat/1.png")
    with pytest.raises(DataError, match="has no sub-folders: put the images of each class"):
        load_dataset(tmp_path / "flat")

    _faces(tmp_path / "broken", ["s1", "s2"], n=1)
    (tmp_path / "broken/s1/2.pgm").write_bytes(b"P5 garbage")
    with pytest.raises(DataError, match=r"could not (read|decode) image .*2.pgm"):
        load_dataset(tmp_path / "broken")

    _faces(tmp_path / "train", ["s1", "s2"], n=1)
    record = load_dataset(tmp_path / "train").preprocessing
    _faces(tmp_path / "other", ["s3"], n=1)
    with pytest.raises(DataError, match=r"class folder\(s\) s3 that the model was not trained on"):
        load_dataset(tmp_path / "other", preprocessing=record)


# -- the CLI: each bad file is one line and exit 2 ----------------------------------------------


@pytest.mark.parametrize("bad", ["huge-label", "one-class-npz", "one-class-folder"])
def test_bad_data_files_are_one_line_and_exit_2_in_the_cli(bad, tmp_path, capsys):
    from privguard.cli import main

    x = np.zeros((8, 3))
    if bad == "huge-label":
        data = tmp_path / "huge.npz"
        np.savez(data, x=x, y=np.array([0, 1] * 3 + [1, 10**12]))
    elif bad == "one-class-npz":
        data = tmp_path / "one.npz"
        np.savez(data, x=x, y=np.ones(8, dtype=int))
    else:
        data = tmp_path / "faces"
        _faces(data, ["s1"], n=4)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert ("class indices" if bad == "huge-label" else "at least two classes") in err
    assert not (tmp_path / "model").exists()
