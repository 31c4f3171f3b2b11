"""Training arithmetic and the DeepSpeed config (pure)."""

from __future__ import annotations

import pytest

from conf_profile.core.config import ConfigError, build
from conf_profile.core.settings import Config
from conf_profile.core.training import deepspeed_config, global_batch, prompt_completion


def test_global_batch_is_checked_with_the_fix_in_the_message() -> None:
    assert global_batch(2, 4, 3) == 24
    assert global_batch(2, 4, 3, expected=24) == 24
    with pytest.raises(ValueError, match="set grad_accum=2"):
        global_batch(2, 4, 3, expected=12)
    with pytest.raises(ValueError, match="multiple of micro_batch_size x workers = 6"):
        global_batch(2, 4, 3, expected=10)
    with pytest.raises(ValueError, match=">= 1"):
        global_batch(0, 4, 3)


def test_zero2_and_zero3_configs() -> None:
    two = deepspeed_config(2, micro_batch_size=1, grad_accum=4, world_size=2, bf16=True, offload_optimizer=True)
    assert two["train_batch_size"] == 8 and two["gradient_accumulation_steps"] == 4
    assert two["zero_optimization"]["stage"] == 2 and two["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert (
        two["bf16"] == {"enabled": True} and "stage3_gather_16bit_weights_on_model_save" not in two["zero_optimization"]
    )
    three = deepspeed_config(3, 2, 1, 4, bf16=False, offload_params=True)
    assert three["train_batch_size"] == 8 and three["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert three["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert "offload_optimizer" not in three["zero_optimization"]


def test_invalid_deepspeed_choices() -> None:
    with pytest.raises(ValueError, match="use 2 or 3"):
        deepspeed_config(1, 1, 1, 1, bf16=False)
    with pytest.raises(ValueError, match="zero_stage=3"):
        deepspeed_config(2, 1, 1, 1, bf16=False, offload_params=True)


def test_train_sft_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="global_batch_size=6"):
        build(Config, overrides=["train_sft.global_batch_size=6", "train_sft.workers=2"])  # 1 x 2 x 2 = 4
    # workers auto (0): the count is known only on the cluster (raytrain.placement checks it then), but a
    # global batch no worker count can give is refused at once
    with pytest.raises(ConfigError, match="global_batch_size=5 is no multiple of micro_batch_size x grad_accum = 2"):
        build(Config, overrides=["train_sft.global_batch_size=5"])
    assert build(Config, overrides=["train_sft.global_batch_size=6"]).train_sft.workers == 0
    with pytest.raises(ConfigError, match="zero_stage"):
        build(Config, overrides=["train_sft.zero_stage=1"])


def test_prompt_completion_needs_an_assistant_turn() -> None:
    pc = prompt_completion([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])
    assert pc["prompt"] == [{"role": "user", "content": "u"}]
    with pytest.raises(ValueError, match="assistant"):
        prompt_completion([{"role": "user", "content": "u"}])
