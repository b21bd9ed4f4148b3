"""Exact label scoring for causal LMs: packed, padding-free, with the shared prompt prefix computed once.

For n texts and L labels, every text becomes one *item*: its prompt (after the prefix all prompts
share) followed by the L answers side by side. Items are packed first-fit into rows of
``row_tokens`` with no padding between them; a 4-D attention mask lets a prompt token see the
shared prefix and its own item's earlier prompt tokens, and an answer token additionally its own
answer's earlier tokens (never another answer, never another item). Position ids restart per item
and per answer, so each answer is scored exactly as if it followed the prompt alone. The LM head
runs only on the positions that predict an answer token.

Rows are short (256 tokens) because the mask makes attention dense within a row: on SMS-length texts,
256-token rows scored 128 texts 1.2-1.45x faster than 512-token rows (192-256 measured best).
"""

from __future__ import annotations

from typing import Any

import torch


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common token prefix, leaving every sequence at least one token of its own."""
    n = min(len(x) for x in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: item indices grouped into rows whose lengths sum to at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max(capacity, lengths[i]) - lengths[i])
    return rows


def chunks(rows: list[list[int]], sizes: list[int], batch_tokens: int) -> list[list[list[int]]]:
    """Consecutive rows grouped so that rows x (the widest row of the group) stays within ``batch_tokens``.

    Each group is one forward pass padded to its widest row, so a long item that fills a row on its own
    only widens the group it is in, not every group.
    """
    groups: list[list[list[int]]] = []
    width = 0
    for used, row in sorted(((sum(sizes[i] for i in r), r) for r in rows), key=lambda wr: -wr[0]):
        if groups and (len(groups[-1]) + 1) * max(width, used) <= batch_tokens:
            groups[-1].append(row)
            width = max(width, used)
        else:
            groups.append([row])
            width = used
    return groups


class LabelScorer:
    """Scores label answers after prompts under a causal LM (a transformers ``*ForCausalLM``, PEFT or not)."""

    def __init__(self, model: Any, pad_id: int, device: str, row_tokens: int = 256, batch_tokens: int = 8192) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = device
        self.row_tokens = row_tokens
        self.batch_tokens = batch_tokens
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def prefix_cache(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Keys and values of the shared prefix, or None where the cache API differs (then no reuse)."""
        try:
            out = self.decoder(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            return [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        except (AttributeError, TypeError):
            return None

    def score(self, prompts: list[list[int]], answers: list[list[int]], reuse_prefix: bool = True) -> torch.Tensor:
        """Summed log-probabilities of each answer after each prompt, shape (len(prompts), len(answers))."""
        shared = common_prefix(prompts) if reuse_prefix and len(prompts) > 1 else 0
        prefix = self.prefix_cache(prompts[0][:shared]) if shared >= 8 else None
        if prefix is None:
            shared = 0
        rest = [p[shared:] for p in prompts]
        total = sum(len(a) for a in answers)
        sizes = [len(p) + total for p in rest]
        out = torch.zeros(len(prompts), len(answers))
        for chunk in chunks(pack(sizes, self.row_tokens), sizes, self.batch_tokens):
            scores = self._forward([[rest[i] for i in row] for row in chunk], answers, prefix, shared)
            out[[i for row in chunk for i in row]] = scores
        return out

    def _forward(
        self,
        rows: list[list[list[int]]],
        answers: list[list[int]],
        prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
        shared: int,
    ) -> torch.Tensor:
        total = sum(len(a) for a in answers)
        n_rows = len(rows)
        width = max(sum(len(p) + total for p in row) for row in rows)
        ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((n_rows, width), dtype=torch.long)
        item = torch.full((n_rows, width), -1, dtype=torch.long)  # item id per column; -1 = padding
        seg = torch.zeros((n_rows, width), dtype=torch.long)  # 0 = prompt, j + 1 = answer j
        pred_rows: list[int] = []
        pred_cols: list[int] = []
        targets: list[int] = []
        owner: list[int] = []  # flat (item * n_answers + answer) index of each predicted token
        n_items = 0
        for r, row in enumerate(rows):
            col = 0
            for prompt in row:
                p = len(prompt)
                ids[r, col : col + p] = torch.tensor(prompt)
                pos[r, col : col + p] = shared + torch.arange(p)
                item[r, col : col + total + p] = n_items
                a_col = col + p
                for j, a in enumerate(answers):
                    ids[r, a_col : a_col + len(a)] = torch.tensor(a)
                    pos[r, a_col : a_col + len(a)] = shared + p + torch.arange(len(a))
                    seg[r, a_col : a_col + len(a)] = j + 1
                    # Answer token 0 is predicted by the last prompt token, token k by answer token k-1.
                    pred_cols += [col + p - 1] + [a_col + k - 1 for k in range(1, len(a))]
                    pred_rows += [r] * len(a)
                    targets += a
                    owner += [n_items * len(answers) + j] * len(a)
                    a_col += len(a)
                col = a_col
                n_items += 1
        same_item = (item[:, :, None] == item[:, None, :]) & (item[:, None, :] >= 0)
        same_seg = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = same_item & same_seg & causal[None]
        mask |= torch.eye(width, dtype=torch.bool)[None]  # padding attends to itself: no fully masked row
        kwargs: dict[str, Any] = {}
        if prefix:
            from transformers import DynamicCache

            # Every token may see the shared prefix; the cache is rebuilt per call (forward appends to it).
            mask = torch.cat([torch.ones(n_rows, width, shared, dtype=torch.bool), mask], dim=-1)
            kwargs["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1)) for k, v in prefix]
            )
        hidden = self.decoder(
            input_ids=ids.to(self.device),
            attention_mask=mask[:, None].to(self.device),
            position_ids=pos.to(self.device),
            use_cache=bool(prefix),
            **kwargs,
        ).last_hidden_state
        picked = hidden[torch.tensor(pred_rows, device=self.device), torch.tensor(pred_cols, device=self.device)]
        logits = self.head(picked).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logp = torch.log_softmax(logits, dim=-1)
        tok = logp.gather(-1, torch.tensor(targets, device=logp.device)[:, None]).squeeze(-1).cpu()
        sums = torch.zeros(n_items * len(answers)).index_add_(0, torch.tensor(owner), tok)
        return sums.view(n_items, len(answers))
