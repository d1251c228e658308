"""The model families the pipeline is tested on: one entry per family, a tiny random model built by
`transformers` itself (no weights needed). Every family test (`test_families*.py`) is parametrised
over `FAMILIES`, and the README's support table is generated from the same list, so a new family is
one entry here plus its module map.

Each config is small enough for a 2-core CPU yet keeps what makes the family different: grouped
key/value heads, biases, q/k norms, fused projections, sliding windows, soft-capping, learned or
rotary positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VOCAB = 128
LAYERS = 3


@dataclass(frozen=True)
class FamilyCase:
    name: str  # what users call it: "RoBERTa", "Qwen3", ...
    kind: str  # "encoder" | "decoder"
    config: Callable[[], Any]  # a tiny transformers config of the family

    def __str__(self) -> str:  # the pytest id
        return self.name


def _encoder_common() -> dict[str, Any]:
    return {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 64}


def _decoder_common() -> dict[str, Any]:
    return {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 96, "max_position_embeddings": 64}


def _bert() -> Any:
    from transformers import BertConfig
    return BertConfig(**_encoder_common())


def _roberta() -> Any:
    from transformers import RobertaConfig
    return RobertaConfig(**_encoder_common(), pad_token_id=1)  # positions start at pad + 1


def _xlm_roberta() -> Any:
    from transformers import XLMRobertaConfig
    return XLMRobertaConfig(**_encoder_common(), pad_token_id=1, type_vocab_size=1)


def _distilbert() -> Any:
    from transformers import DistilBertConfig
    return DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=LAYERS, n_heads=4, hidden_dim=64,
                            max_position_embeddings=64)


def _mpnet() -> Any:
    from transformers import MPNetConfig
    return MPNetConfig(**_encoder_common(), relative_attention_num_buckets=32)


def _modernbert() -> Any:
    from transformers import ModernBertConfig
    return ModernBertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, global_attn_every_n_layers=2,
                            local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                            sep_token_id=2)


def _llama() -> Any:
    from transformers import LlamaConfig
    return LlamaConfig(**_decoder_common(), tie_word_embeddings=True)


def _qwen2() -> Any:
    from transformers import Qwen2Config
    return Qwen2Config(**_decoder_common(), tie_word_embeddings=True)  # q/k/v carry biases


def _qwen3() -> Any:
    from transformers import Qwen3Config
    return Qwen3Config(**_decoder_common(), head_dim=16, tie_word_embeddings=True)  # per-head q/k RMSNorm


def _mistral() -> Any:
    from transformers import MistralConfig
    return MistralConfig(**_decoder_common(), sliding_window=8)


def _gemma() -> Any:
    from transformers import GemmaConfig
    return GemmaConfig(**_decoder_common(), head_dim=16)  # sqrt(hidden)-scaled embeddings, GeGLU, (1 + w) norms


def _gemma2() -> Any:
    from transformers import Gemma2Config
    return Gemma2Config(**_decoder_common(), head_dim=16, sliding_window=8, final_logit_softcapping=30.0,
                        attn_logit_softcapping=50.0)


def _phi3() -> Any:
    from transformers import Phi3Config
    return Phi3Config(**_decoder_common(), pad_token_id=0)  # fused qkv_proj and gate_up_proj


def _gpt2() -> Any:
    from transformers import GPT2Config
    return GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=LAYERS, n_head=4, n_inner=96, n_positions=64)


FAMILIES: tuple[FamilyCase, ...] = (
    FamilyCase("BERT", "encoder", _bert),
    FamilyCase("RoBERTa", "encoder", _roberta),
    FamilyCase("XLM-RoBERTa", "encoder", _xlm_roberta),
    FamilyCase("DistilBERT", "encoder", _distilbert),
    FamilyCase("MPNet", "encoder", _mpnet),
    FamilyCase("ModernBERT", "encoder", _modernbert),
    FamilyCase("Llama", "decoder", _llama),
    FamilyCase("Qwen2", "decoder", _qwen2),
    FamilyCase("Qwen3", "decoder", _qwen3),
    FamilyCase("Mistral", "decoder", _mistral),
    FamilyCase("Gemma", "decoder", _gemma),
    FamilyCase("Gemma2", "decoder", _gemma2),
    FamilyCase("Phi-3", "decoder", _phi3),
    FamilyCase("GPT-2", "decoder", _gpt2),
)
ENCODERS = tuple(f for f in FAMILIES if f.kind == "encoder")
DECODERS = tuple(f for f in FAMILIES if f.kind == "decoder")


def build(case: FamilyCase, seed: int = 0) -> Any:
    """The tiny random model of `case`: a sequence classifier (2 labels) for an encoder, a causal LM
    for a decoder; eager attention (what the supernet and the parity checks use), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = case.config()
    config._attn_implementation = "eager"
    if case.kind == "encoder":
        config.num_labels = 2
        return AutoModelForSequenceClassification.from_config(config).eval()
    return AutoModelForCausalLM.from_config(config).eval()
