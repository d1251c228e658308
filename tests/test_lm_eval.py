"""Language-model evaluation on a tiny random Llama with a word-level tokenizer (fast, hermetic)."""

import math

import pytest
import torch

from mlfs_edge.data import Split
from mlfs_edge.lm import (
    encode_prompt_answer,
    evaluate_label_words,
    format_prompt,
    label_word_scores,
    perplexity,
    token_stream,
)

WORDS = ["<pad>", "<unk>", "</s>", "what", "is", "the", "capital", "of", "france", "who", "wrote", "hamlet",
         "how", "many", "legs", "does", "a", "spider", "have", "question", "answer", "type", "new", "york",
         "person", "location", "number", "entity", "abbreviation", "description", ":", "(", ")", ",", "?"]


def word_tokenizer():
    """A real fast tokenizer over a fixed word list (whitespace + punctuation split)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(vocab_size: int, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **overrides)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


DOCS = ["what is the capital of france ?", "who wrote hamlet ?", "how many legs does a spider have ?" * 3]


def test_uniform_model_has_perplexity_equal_to_vocabulary_size(tok):
    model = tiny_llama(len(tok))
    torch.nn.init.zeros_(model.lm_head.weight)  # every next token equally likely
    res = perplexity(model, tok, DOCS, block_size=8)
    n = len(token_stream(tok, DOCS))
    blocks = [min(8, n - s) for s in range(0, n, 8)]
    assert res.tokens == sum(b - 1 for b in blocks if b >= 2)
    assert res.perplexity == pytest.approx(len(tok), rel=1e-5)


def test_perplexity_equals_a_block_by_block_hand_computation(tok):
    model = tiny_llama(len(tok))
    ids = token_stream(tok, DOCS)
    assert ids.count(tok.eos_token_id) == len(DOCS)  # every document ends with EOS
    nll, count = 0.0, 0
    for start in range(0, len(ids), 7):  # 7 does not divide the stream: a short last block
        block = torch.tensor([ids[start:start + 7]])
        if block.shape[1] < 2:
            continue
        logp = torch.log_softmax(model(input_ids=block).logits[0, :-1], -1)
        nll -= logp.gather(-1, block[0, 1:, None]).sum().item()
        count += block.shape[1] - 1
    res = perplexity(model, tok, DOCS, block_size=7, batch_size=3)
    assert res.tokens == count
    assert res.perplexity == pytest.approx(math.exp(nll / count), rel=1e-4)
    capped = perplexity(model, tok, DOCS, block_size=7, max_tokens=10)
    assert capped.tokens == 6 + 2  # blocks of 7 and 3 tokens


@pytest.mark.parametrize("words", [
    ["location", "new york", "person"],  # "new york" is two tokens: log-probs add up, one sequence per pair
    ["location", "number", "person"],  # single tokens: one pass per prompt scores them all
])
def test_label_word_scores_match_one_sequence_at_a_time(tok, words):
    model = tiny_llama(len(tok))
    texts = ["what is the capital of france ?", "who wrote hamlet ?", "how many legs does a spider have ?"]
    scores = label_word_scores(model, tok, texts, words, batch_size=2)
    assert scores.shape == (3, 3)
    for i, text in enumerate(texts):
        for j, word in enumerate(words):
            item = encode_prompt_answer(tok, format_prompt(text, words), word)
            x = torch.tensor([item.input_ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1)
            expected = sum(logp[t - 1, item.input_ids[t]].item() for t in range(item.answer_start, x.shape[1]))
            assert scores[i, j].item() == pytest.approx(expected, abs=1e-4)
    assert len(encode_prompt_answer(tok, "q", "new york").input_ids) - \
        encode_prompt_answer(tok, "q", "new york").answer_start == 2
    res = evaluate_label_words(model, tok, Split(texts, [0, 1, 2]), words)
    assert res.predictions == scores.argmax(-1).tolist()
    assert res.accuracy == sum(p == y for p, y in zip(res.predictions, [0, 1, 2], strict=True)) / 3


def test_long_prompts_lose_their_beginning_not_the_answer(tok):
    item = encode_prompt_answer(tok, "what " * 50, "new york", max_length=10)
    assert len(item.input_ids) == 10 and item.input_ids[-2:] == tok(" new york", add_special_tokens=False)["input_ids"]


def test_bad_input_is_refused_with_a_reason(tok):
    model = tiny_llama(len(tok))
    with pytest.raises(ValueError, match="block_size"):
        perplexity(model, tok, DOCS, block_size=1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(model, tok, [""])
    with pytest.raises(ValueError, match="at least 2 label words"):
        label_word_scores(model, tok, ["who ?"], ["person"])
