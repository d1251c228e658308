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


# --- the byte-level BPE tokenizer (SmolLM2) --------------------------------------------------------
BPE_SOURCES = [ROOT / "android_demo/app/src/main/java/org/mlfsedge/demo/ByteLevelBpeTokenizer.java",
               ROOT / "android_demo/hosttest/java/BpeTokenizerHostTest.java"]
BPE_TRICKY = TRICKY[:11] + TRICKY[12:] + [
    "<|im_start|>user\\nWhat is 2+2?<|im_end|>\\n<|im_start|>assistant\\n", "   leading and trailing   ",
    "numbers 1234567 3.14159 -42 1e10", "can't won't I'm you'll they'd we've She'S", "trailing newline\\n\\n",
    "Ω≈ç√∫˜µ≤≥÷ 𝓗𝓮𝓵𝓵𝓸 𠜎𠜱", "\u3000ideographic\u00a0nbsp\u2003em space", "<|endoftext|><|endoftext|>x",
]


def test_java_bpe_tokenizer_matches_tokenizers_on_smollm2_and_news(tmp_path):
    """Ids identical to the Python tokenizer of the bundled SmolLM2 on real news text (paragraphs of
    the bundled articles) and tricky strings; decode(ids) identical to tokenizers' decode."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK on this machine")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.data import load_text

    classes = tmp_path / "classes"
    subprocess.run(["javac", "-d", str(classes), *map(str, BPE_SOURCES)], check=True)
    tokenizer_json = smollm2_path() / "tokenizer.json"
    paragraphs = [p.strip() for doc in load_text("news").test[:160] for p in doc.split("\n") if p.strip()]
    assert len(paragraphs) >= 200
    # Whole articles too (newlines inside), a few: "\n" is written as a literal \n, one text per line.
    texts = [t.replace("\n", "\\n") for t in BPE_TRICKY + paragraphs[:300] + load_text("news").test[160:170]]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    proc = subprocess.run(["java", "-cp", str(classes), "BpeTokenizerHostTest", str(tokenizer_json), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    ref = Tokenizer.from_file(str(tokenizer_json))
    auto = AutoTokenizer.from_pretrained(smollm2_path())
    assert lines[0] == f"VOCAB {ref.get_vocab_size()} {ref.token_to_id('<|im_end|>')}"
    body = lines[1:]
    assert len(body) == 3 * len(texts)
    mismatches, n_tokens = [], 0
    for k, text in enumerate(texts):
        text = text.replace("\\n", "\n")
        ids_line, text_line, stream_line = body[3 * k : 3 * k + 3]
        got = [int(t) for t in ids_line.split()[1:]]
        want = ref.encode(text).ids
        assert auto(text)["input_ids"] == want  # the transformers face agrees with tokenizers
        n_tokens += len(want)
        if got != want:
            mismatches.append((text[:80], got[:20], want[:20]))
            continue
        decoded = bytes.fromhex(text_line.split(" ", 1)[1] if " " in text_line else "").decode("utf-8")
        assert decoded == ref.decode(want, skip_special_tokens=False), text[:80]
        assert stream_line == "STREAM ok", text[:80]
    assert not mismatches, mismatches[:3]
    assert n_tokens > 20000  # real text, not a handful of words
