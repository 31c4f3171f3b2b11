"""Embedded models: the tiny test model, the demo model from its wheel, and vLLM on CPU (docs/architecture.md 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conf_profile import models

HELLO = [{"role": "user", "content": "Say hello in five words."}]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_dir(models_root: Path) -> Path:
    return models.build_tiny_model(models_root / "tiny", seed=0)


@pytest.fixture(scope="session")
def demo_dir(models_root: Path) -> Path:
    return models.prepare_demo_model(models_root / "cache")


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_import_is_cheap():
    heavy = "{'torch', 'transformers', 'tokenizers', 'vllm'}"
    code = f"import sys, conf_profile.models; print(sorted(set(sys.modules) & {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CONF_PROFILE_CACHE", str(tmp_path))
    assert models.default_cache_dir() == tmp_path
    monkeypatch.delenv("CONF_PROFILE_CACHE")
    assert models.default_cache_dir() == Path.home() / ".cache" / "conf-profile"


def test_missing_wheel_says_make_setup(monkeypatch):
    monkeypatch.setattr(models, "DEMO_WHEEL", "no-such-wheel-conf-profile")
    with pytest.raises(FileNotFoundError, match="make setup"):
        models.find_demo_gguf()


def test_failed_build_leaves_nothing_behind(tmp_path):
    def build(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        models._build_atomically(tmp_path / "m", False, build)
    assert list(tmp_path.iterdir()) == []


def test_build_that_loses_a_race_keeps_the_finished_folder(tmp_path):
    dest = tmp_path / "m"

    def build(out: Path) -> None:
        (out / "mine.txt").write_text("late")
        dest.mkdir()  # another process completes the same build meanwhile
        (dest / "theirs.txt").write_text("first")
        (dest / models.MARKER).write_text("ok\n")

    assert models._build_atomically(dest, False, build) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([models.MARKER, "theirs.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_tiny_model_is_deterministic_per_seed(tiny_dir, models_root):
    again = models.build_tiny_model(models_root / "tiny-again", seed=0)
    other = models.build_tiny_model(models_root / "tiny-seed1", seed=1)
    first, second, third = _tensors(tiny_dir), _tensors(again), _tensors(other)
    assert first.keys() == second.keys() and len(first) > 10
    assert all(first[k].equal(second[k]) for k in first)
    assert not first["model.embed_tokens.weight"].equal(third["model.embed_tokens.weight"])
    assert (tiny_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_tiny_model_build_is_idempotent(tiny_dir):
    weights = tiny_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert models.build_tiny_model(tiny_dir, seed=0) == tiny_dir
    assert weights.stat().st_mtime_ns == before
    assert (tiny_dir / models.MARKER).is_file()


def test_tiny_config_fits_vllm_cpu(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 64
    assert 1000 <= config["vocab_size"] <= 2048
    assert config["max_position_embeddings"] >= 2048


def test_tiny_tokenizer_chatml_and_roundtrip(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None and tok.pad_token != tok.eos_token
    prompt = tok.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nSay hello in five words.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(prompt)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2  # special tokens stay single ids
    text = "User 42 rated 'Amélie' 5/5 — 日本 🙂\n"
    assert tok.decode(tok(text)["input_ids"]) == text


def _greedy_in_transformers(model_dir, max_new_tokens):
    """The new token ids of a greedy chat answer to HELLO, and the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok.apply_chat_template(HELLO, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :], tok


def test_tiny_model_generates_in_transformers(tiny_dir):
    new, tok = _greedy_in_transformers(tiny_dir, 6)
    assert len(new) == 6  # special tokens have zero logits, so a random model never stops early
    assert tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
@pytest.mark.llm
def test_tiny_model_generates_in_vllm(tiny_dir):
    answers = models.chat_with_vllm(tiny_dir, [HELLO, [{"role": "user", "content": "hi"}]], max_tokens=8)
    assert len(answers) == 2
    assert all(isinstance(a, str) and a.strip() for a in answers)


@pytest.mark.slow
@pytest.mark.llm
def test_demo_model_prepares_from_wheel(demo_dir):
    assert demo_dir.name == models.DEMO_NAME and (demo_dir / models.MARKER).is_file()
    config = json.loads((demo_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (demo_dir / name).is_file(), name
    before = (demo_dir / "model.safetensors").stat().st_mtime_ns
    assert models.prepare_demo_model(demo_dir.parent.parent) == demo_dir
    assert (demo_dir / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.llm
def test_demo_model_answers_in_transformers(demo_dir):
    new, tok = _greedy_in_transformers(demo_dir, 16)
    answer = tok.decode(new, skip_special_tokens=True)
    # A broken conversion (wrong weights, tokenizer or template) answers with garbage, not a greeting.
    assert "hello" in answer.lower(), answer


@pytest.mark.slow
@pytest.mark.llm
def test_demo_model_answers_in_vllm(demo_dir):
    [answer] = models.chat_with_vllm(demo_dir, [HELLO], max_tokens=16)
    assert "hello" in answer.lower(), answer


@pytest.mark.gpu
def test_demo_model_answers_in_vllm_on_gpu(demo_dir):
    """On a CUDA machine (CONF_PROFILE_TARGET=gpu setup) the same folder serves through vLLM on the GPU."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(demo_dir), dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3)
    [out] = llm.chat([[{"role": "user", "content": "Say hello in five words."}]], SamplingParams(max_tokens=16))
    assert "hello" in out.outputs[0].text.lower()


def _model_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "qwen2"}')
    (root / "model.safetensors").write_bytes(b"weights")
    return root


def test_a_model_folder_by_uri_is_copied_into_the_cache_once(tmp_path):
    """pyarrow.fs's file:// scheme stands for an object store here (the same code path as s3://)."""
    src = _model_folder(tmp_path / "store" / "student")
    cache = tmp_path / "cache"
    local = models.resolve_model(f"file://{src}", str(cache))
    assert local.parent == cache / "models" / "remote" and local.name.startswith("student-")
    assert (local / "model.safetensors").read_bytes() == b"weights" and (local / models.MARKER).exists()
    assert models.resolve_model(f"file://{src}", str(cache)) == local  # unchanged: cached, not copied again
    (src / "model.safetensors").write_bytes(b"retrained")  # trained again at the same URI (a redone stage)
    again = models.resolve_model(f"file://{src}", str(cache))
    assert again != local and (again / "model.safetensors").read_bytes() == b"retrained"  # never served stale
    assert (local / "model.safetensors").read_bytes() == b"weights"
    assert models.resolve_model(str(src), str(cache)) == src  # a plain folder is used where it is
    (src / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json there"):
        models.resolve_model(f"file://{src}x", str(cache))


def test_a_hub_id_is_downloaded_into_the_cache(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, cache_dir):  # test double of the hub client: no network here
        calls.append((repo_id, cache_dir))
        return str(_model_folder(Path(cache_dir) / "snapshot"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    folder = models.resolve_model("SomeOrg/some-model-1.5B", str(tmp_path / "cache"))
    assert calls == [("SomeOrg/some-model-1.5B", str(tmp_path / "cache" / "hub"))]
    assert (folder / "config.json").is_file()
    with pytest.raises(FileNotFoundError, match="a URI of one"):
        models.resolve_model("not/a/hub/id", str(tmp_path / "cache"))


def test_a_hub_id_offline_fails_with_what_to_do(tmp_path):
    code = ("from conf_profile.models import resolve_model\n"
            f"resolve_model('SomeOrg/some-model', {str(tmp_path)!r})")  # fmt: skip
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0
    assert "the hub could not give it" in res.stderr and "huggingface-cli download SomeOrg/some-model" in res.stderr
