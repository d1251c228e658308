"""The module that is exported: token ids + attention mask → class logits or a sentence embedding."""

from __future__ import annotations

import torch
from torch import nn

OUTPUTS = ("logits", "embedding")
MASK_NEG = -1e4  # additive mask value: exp(-1e4) is 0 in fp32 and fp16, and -1e4 fits fp16


class EncoderForExport(nn.Module):
    """Wrap a Hugging Face BERT-family model for ``torch.export``.

    The wrapper builds the 4-D additive float mask itself, ``(1 - mask[:, None, None, :]) * -1e4``,
    and passes it to the encoder, which uses a 4-D float mask as given. Letting transformers build it
    from the 2-D mask breaks PT2E: ``prepare_pt2e`` turns the integer ``arange`` inside its mask
    builder into float, and indexing with it raises "tensors used as indices must be long ...".

    ``output="logits"`` needs a sequence-classification model and returns its logits;
    ``output="embedding"`` returns the masked mean of the last hidden states (the sentence embedding
    all-MiniLM-L6-v2 was trained for). Outputs are float32 whatever the compute dtype.
    """

    def __init__(self, model: nn.Module, output: str = "logits") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if output == "logits" and not hasattr(model, "classifier"):
            raise ValueError("output 'logits' needs a sequence-classification model (one with a classifier "
                             "head); use output 'embedding' for a bare encoder")
        self.model = model
        self.output = output
        self.compute_dtype = next(model.parameters()).dtype
        if self.compute_dtype not in (torch.float32, torch.float16):
            self.compute_dtype = torch.float32  # int8 tables and quantised linears compute in float32

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(self.compute_dtype)
        additive = (1.0 - mask[:, None, None, :]) * MASK_NEG
        if self.output == "logits":
            return self.model(input_ids=input_ids, attention_mask=additive).logits.float()
        encoder = getattr(self.model, "base_model", self.model)
        hidden = encoder(input_ids=input_ids, attention_mask=additive).last_hidden_state
        weights = mask[:, :, None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return pooled.float()
