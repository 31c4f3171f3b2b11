"""Training arithmetic and the DeepSpeed config, as pure functions (built from the stage config).

>>> ds = deepspeed_config(zero_stage=3, micro_batch_size=2, grad_accum=4, world_size=2, bf16=False)
>>> ds["train_batch_size"], ds["zero_optimization"]["stage"]
(16, 3)
"""

from __future__ import annotations

from typing import Any


def global_batch(micro_batch_size: int, grad_accum: int, world_size: int, expected: int | None = None) -> int:
    """micro batch x accumulation x world size, checked against the configured global batch if any.

    >>> global_batch(2, 4, 2)
    16
    """
    if min(micro_batch_size, grad_accum, world_size) < 1:
        raise ValueError(f"micro_batch_size={micro_batch_size}, grad_accum={grad_accum}, workers={world_size}: "
                         "each must be >= 1")  # fmt: skip
    total = micro_batch_size * grad_accum * world_size
    if expected is not None and expected != total:
        per_step = micro_batch_size * world_size
        hint = (f"set grad_accum={expected // per_step}" if expected % per_step == 0
                else f"make it a multiple of micro_batch_size x workers = {per_step}")  # fmt: skip
        raise ValueError(f"global_batch_size={expected} but micro_batch_size {micro_batch_size} x grad_accum "
                         f"{grad_accum} x workers {world_size} = {total}; {hint}")  # fmt: skip
    return total


def deepspeed_config(
    zero_stage: int,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    bf16: bool,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    gradient_clipping: float = 1.0,
) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO stage 2 or 3, with optional CPU offload (the optimizer with stage 2
    or 3, the parameters with stage 3). Batch sizes are explicit, so DeepSpeed and the HF trainer agree."""
    if zero_stage not in (2, 3):
        raise ValueError(f"zero_stage={zero_stage}: use 2 or 3")
    if offload_params and zero_stage != 3:
        raise ValueError("offload_params needs zero_stage=3 (stage 2 shards no parameters)")
    zero: dict[str, Any] = {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if zero_stage == 3:
        # one full copy of the weights is gathered at save time, so the exported folder is a normal model
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_batch_size": global_batch(micro_batch_size, grad_accum, world_size),
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,  # progress comes from the trainer's own logs
        "wall_clock_breakdown": False,
    }


def prompt_completion(messages: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Split a chat example into TRL's prompt-completion form: the loss is then on the completion (the
    assistant turn) only, with the model's own chat template.

    >>> prompt_completion([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
    ...                    {"role": "assistant", "content": "a"}])["completion"]
    [{'role': 'assistant', 'content': 'a'}]
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT example must end with the assistant's turn")
    return {"prompt": list(messages[:-1]), "completion": [messages[-1]]}
