"""Prompt templates: how a dataset question becomes the token ids the policy continues.

`r1_zero` is the R1-Zero setup: the instruction from the DeepSeek-R1 paper as system prompt, the
question as user turn, and `<think>` prefilled after the assistant header. The prefill matters on
small models: without it a 135M chat model never writes a tag, so format rewards give no signal
(see ENVIRONMENT.md). Because the prefill is part of the prompt, the trainer puts it back in front
of every completion before the rewards see it (so a reward's own `prefix` must stay unset, or the
tag appears twice; validation refuses that). `r1_chat` is the same without the prefill, for
models that learned the template in SFT. Any other string is a user-turn template with
`{question}`.

A question is text, or a conversation as TRL's conversational `prompt` column holds it: a list of
`{"role", "content"}` messages ending with a user turn. A system message in the conversation wins
over the recipe's (and over the R1 instruction); a `{question}` template wraps the last user turn.
"""
from __future__ import annotations

R1_INSTRUCTION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
BUILT_IN = ("r1_zero", "r1_chat")
ROLES = ("system", "user", "assistant")


class PromptError(ValueError):
    pass


def check_template(template: str) -> None:
    if template not in BUILT_IN and "{question}" not in template:
        raise PromptError(
            f"data.prompt_template: '{template[:40]}' is neither {' nor '.join(BUILT_IN)} "
            "nor a string containing {question}"
        )


# Forced empty thinking: the completion starts inside the answer, so the model must answer at once.
# Comparing accuracy with and without it measures what the thinking is worth.
NO_THINK_PREFILL = "<think>\n</think>\n<answer>"


def prefill(template: str, no_think: bool = False) -> str:
    """Text the prompt puts at the start of the assistant turn (the completion continues it);
    with `no_think`, an empty think block and an open answer tag, whatever the template."""
    if no_think:
        return NO_THINK_PREFILL
    return "<think>\n" if template == "r1_zero" else ""


def chat_messages(question: str | list[dict], template: str, system_prompt: str | None) -> list[dict]:
    """The chat turns of one prompt; `question` is text or a conversation (see the module docstring)."""
    system = (system_prompt or R1_INSTRUCTION) if template in BUILT_IN else system_prompt
    if isinstance(question, list):
        messages = [{"role": m["role"], "content": m["content"]} for m in question]
        if template not in BUILT_IN:
            messages[-1] = {"role": "user", "content": template.format(question=messages[-1]["content"])}
        if messages[0]["role"] == "system" or not system:
            return messages
        return [{"role": "system", "content": system}] + messages
    user = question if template in BUILT_IN else template.format(question=question)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def conversation_problem(value) -> str | None:
    """Why a question-column value is neither text nor a usable conversation (None when it is fine)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return None  # text (a number is read as its text)
    if not isinstance(value, list) or not value:
        return f"holds {type(value).__name__} {str(value)[:30]!r}, neither text nor a list of messages"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"message {i} is {type(message).__name__}, not a {{role, content}} mapping"
        if message.get("role") not in ROLES:
            return f"message {i} has role {message.get('role')!r}, not one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"message {i} has no text `content`"
    if value[-1]["role"] != "user":
        return "does not end with a user message (the model answers the last user turn)"
    return None


def check_conversations(rows: list[dict], column: str, what: str) -> None:
    """Raise PromptError naming the first row whose question is neither text nor a valid conversation."""
    for i, row in enumerate(rows):
        problem = conversation_problem(row.get(column))
        if problem:
            raise PromptError(f"{what} row {i}: the question column '{column}' {problem}; give text, or a list of "
                              "{role: system|user|assistant, content: text} messages (data.question_column)")


def require_chat_template(tokenizer, model_dir: str | None = None) -> None:
    if not getattr(tokenizer, "chat_template", None):
        whose = f"the tokenizer of {model_dir}" if model_dir else "the tokenizer"
        raise PromptError(
            f"{whose} has no chat template, which every prompt template needs: use a chat (instruct) "
            "model, or add a `chat_template` to the model folder's tokenizer_config.json"
        )


def render_prompt(tokenizer, question: str | list[dict], template: str, system_prompt: str | None = None,
                  no_think: bool = False) -> str:
    """The full prompt text: chat template, generation header and any prefill (see `prefill`)."""
    require_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(
        chat_messages(question, template, system_prompt), tokenize=False, add_generation_prompt=True
    )
    return text + prefill(template, no_think)


def encode_prompt(tokenizer, question: str | list[dict], template: str, system_prompt: str | None = None,
                  no_think: bool = False) -> list[int]:
    # The chat template already holds the special tokens; adding them again would double BOS.
    text = render_prompt(tokenizer, question, template, system_prompt, no_think)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_all(tokenizer, rows: list[dict], question_column: str, template: str, system_prompt: str | None,
               max_prompt_tokens: int, context_length: int | None, max_new_tokens: int, what: str = "data.train") -> list[list[int]]:
    """Encode every prompt once, failing early on one that cannot fit.

    Raises PromptError naming the first row whose prompt exceeds `max_prompt_tokens`, or when a
    prompt plus `max_new_tokens` cannot fit the model's context.
    """
    if context_length is not None and max_prompt_tokens + max_new_tokens > context_length:
        raise PromptError(
            f"data.max_prompt_tokens ({max_prompt_tokens}) + rollout.max_new_tokens ({max_new_tokens}) "
            f"exceeds the model's context of {context_length} tokens; lower one of them"
        )
    encoded = []
    for i, row in enumerate(rows):
        question = row[question_column]
        ids = encode_prompt(tokenizer, question if isinstance(question, list) else str(question), template, system_prompt)
        if len(ids) > max_prompt_tokens:
            raise PromptError(
                f"{what} row {i}: the prompt is {len(ids)} tokens, longer than data.max_prompt_tokens="
                f"{max_prompt_tokens}; raise data.max_prompt_tokens or shorten the question"
            )
        encoded.append(ids)
    return encoded
