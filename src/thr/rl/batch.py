"""From sampled responses to the padded tensors of one RL batch.

Layout (as in TRL): prompts left-padded to ``P`` tokens, responses right-padded to ``T`` tokens,
concatenated to ``[B, P + T]``. Every row's response starts at column ``P``, so the states that
predict response token ``k`` sit at column ``P - 1 + k`` for all rows, and a forward with
``logits_to_keep = T + 1`` returns exactly those (plus one extra at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thr.models.generation import pad_rows


@dataclass
class RolloutBatch:
    """Tensors of ``B`` responses.

    input_ids: ``[B, P + T]`` prompt (left-padded) + response (right-padded).
    attention_mask: ``[B, P + T]`` 1 on real tokens.
    response_ids: ``[B, T]`` (pad id at padding).
    response_mask: ``[B, T]`` bool, real response tokens.
    prompt_width: ``P``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int

    @property
    def response_width(self) -> int:
        return self.response_ids.shape[1]

    def rows(self, index: torch.Tensor) -> "RolloutBatch":
        """Sub-batch of the given rows, trimmed of columns that are padding in all of them."""
        attn = self.attention_mask[index]
        resp_mask = self.response_mask[index]
        prompt_cols = attn[:, : self.prompt_width].any(0).nonzero()
        left = int(prompt_cols[0]) if prompt_cols.numel() else self.prompt_width - 1
        left = min(left, self.prompt_width - 1)  # keep >= 1 prompt column: it predicts token 0
        resp_cols = resp_mask.any(0).nonzero()
        width = int(resp_cols[-1]) + 1 if resp_cols.numel() else 1
        end = self.prompt_width + width
        return RolloutBatch(
            input_ids=self.input_ids[index, left:end],
            attention_mask=attn[:, left:end],
            response_ids=self.response_ids[index, :width],
            response_mask=resp_mask[:, :width],
            prompt_width=self.prompt_width - left,
        )


def build_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, device: torch.device) -> RolloutBatch:
    """Pad prompts on the left and responses on the right (see module doc)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("a prompt encodes to zero tokens; the first response token needs a prompt state")
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(r) for r in response_ids))
    prompt, prompt_attn = pad_rows(prompt_ids, pad_id, P, side="left")
    response, response_attn = pad_rows(response_ids, pad_id, T, side="right")
    input_ids = torch.cat([prompt, response], dim=1)
    attention = torch.cat([prompt_attn, response_attn], dim=1)
    return RolloutBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        response_ids=input_ids[:, P:].clone().to(device),
        response_mask=attention[:, P:].bool().to(device),
        prompt_width=P,
    )


def policy_forward(model, batch: RolloutBatch) -> torch.Tensor:
    """Logits ``[B, T, V]`` that predict the response tokens (divide by temperature yourself).

    Position ids follow the attention mask, as in ``generate`` with left padding. Inside a
    :func:`thr.models.loading.capture_head_inputs` block the captured LM-head inputs are
    ``[B, T + 1, d]``; their first ``T`` positions are the states of THR.
    """
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids,
        logits_to_keep=batch.response_width + 1,
        use_cache=False,
    )
    return out.logits[:, :-1]
