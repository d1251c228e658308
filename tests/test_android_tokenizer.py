"""The Android app's Java WordPiece tokenizer, run on the host JVM, against the Python tokenizer."""

import shutil
import subprocess
from pathlib import Path

import pytest

from mlfs_edge.assets import minilm_path
from mlfs_edge.data import load_classification

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "android_demo/app/src/main/java/org/mlfsedge/demo/WordPieceTokenizer.java",
           ROOT / "android_demo/hosttest/java/TokenizerHostTest.java"]
TRICKY = [
    "Café déjà vu — naïve résumé!", "Don't stop: it's 3.14pm, isn't it?", "東京タワーは高い。中文测试",
    "emoji 🙂 and symbols ©®™ € $5", "tabs\tand\nnewlines  and   spaces", "UPPER lower MiXeD",
    "a" * 120, "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "http://example.com/path?q=1&r=2", "\u00adsoft\u200bhyphen zero\u200dwidth", "ﬁ ligature and ½ fraction",
    "" , "   ", "Ünïcödé ÀÉÎÕÜ çñ ß", "Hello, world! (brackets) [square] {curly} <angle>",
]


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory):
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK on this machine")
    out = tmp_path_factory.mktemp("classes")
    subprocess.run(["javac", "-d", str(out), *map(str, SOURCES)], check=True)
    return out


def test_java_tokenizer_matches_the_python_tokenizer(java_classes, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    sentences = TRICKY + load_classification("rotten_tomatoes").test.texts[:400]
    sentences = [s.replace("\n", " ") for s in sentences]  # one sentence per line for the runner
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    proc = subprocess.run(["java", "-cp", str(java_classes), "TokenizerHostTest", str(minilm_path() / "vocab.txt"),
                           str(path), "64"], capture_output=True, text=True, check=True)
    java_ids = [list(map(int, line.split())) for line in proc.stdout.splitlines()]
    assert len(java_ids) == len(sentences)
    mismatches = []
    for s, got in zip(sentences, java_ids, strict=True):
        want = tok(s, truncation=True, max_length=64)["input_ids"]
        if got != want:
            mismatches.append((s, got, want))
    assert not mismatches, mismatches[:3]
