"""A reward model as a reward: the score a sequence-classification model gives (prompt, completion).

For prompts that no rule can check (writing, open questions), DeepSeek-R1's second RL stage
scores completions with a reward model (paper, section 2.3.4). Any Hugging Face folder that
`AutoModelForSequenceClassification` loads and that has one output serves:

    {name: reward_model, kwargs: {path: ./my-reward-model}, applies_to: general}

Each pair is rendered with the reward model's own tokenizer: through its chat template as a user
turn (the prompt) and an assistant turn (the completion) when the tokenizer has one, else as a
text pair. The score is the model's single output logit, which transformers' classification head
reads at the last token that is not padding.

Deliberate simplifications: the model is loaded on first use (so checking a recipe stays fast) and
kept; it runs in the caller's process, on the GPU when there is one (bf16) and otherwise on the CPU
(fp32); a pair longer than `max_length` tokens loses its end; scores are raw logits (GRPO's group
normalisation removes their scale and offset). When the tokenizer has no padding token, its EOS
token pads, and a text that ends in EOS is then read one token earlier.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from rewards.registry import RewardFunction, register


@register("reward_model", factory=True)
def get_reward_model_reward(path: str, batch_size: int = 8, max_length: int = 2048) -> RewardFunction:
    """Build a reward from the sequence-classification model folder `path`.

    Args:
        path: a folder holding config.json, the weights and the tokenizer; the model has one output.
        batch_size: pairs per forward pass.
        max_length: most tokens of a rendered pair; longer ones are cut at the end.
    """
    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        raise ValueError(f"reward model folder {path!r} has no config.json")
    config = json.loads(config_file.read_text())
    outputs = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)
    if outputs != 1:
        raise ValueError(f"reward model {path!r} has {outputs} outputs; a reward model has one (num_labels=1)")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be at least 1 and max_length at least 2, got {batch_size}, {max_length}")
    scorer = _PairScorer(str(Path(path).expanduser()), batch_size, max_length)

    def reward_model(completions: list[str], **columns) -> list[float | None]:
        """The reward model's logit for each (prompt, completion) pair.

        Args:
            completions: N completion texts.
            columns: must hold `prompts`, the N prompts (as the user wrote them, before any template).
        Returns:
            N real scores, higher is better.

        Example (a model trained to prefer polite answers):
            reward_model(["Sure, here it is: ...", "No."], prompts=["Write a haiku.", "Write a haiku."])
            == [2.31, -0.87]
        """
        if "prompts" not in columns:
            raise KeyError("the reward_model reward needs the `prompts` column")
        return scorer.score(list(columns["prompts"]), list(completions))

    return reward_model


def placement():
    """Where a reward model scores: on a GPU in bf16 where there is one, else on the CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


class _PairScorer:
    """Loads the model once (thread-safe: the scorer runs rewards in threads) and scores batches."""

    def __init__(self, path: str, batch_size: int, max_length: int):
        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self._lock = threading.Lock()
        self._model = self._tokenizer = None

    def _load(self):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        with self._lock:
            if self._model is None:
                device, dtype = placement()
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                tokenizer.padding_side = "right"
                model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=dtype).to(device).eval()
                # The head finds each sequence's last real token by looking for the padding id.
                model.config.pad_token_id = tokenizer.pad_token_id
                self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def encode(self, tokenizer, prompt: str, completion: str) -> list[int]:
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt, completion)["input_ids"]
        return ids[: self.max_length]

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        import torch

        tokenizer, model = self._load()
        encoded = [self.encode(tokenizer, p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(encoded), self.batch_size):
                batch = tokenizer.pad({"input_ids": encoded[start:start + self.batch_size]}, return_tensors="pt")
                batch = {key: value.to(model.device) for key, value in batch.items()}
                scores += model(**batch).logits[:, 0].float().tolist()
        return scores
