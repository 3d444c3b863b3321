"""Which engine can serve which model: the one place that knows (the job and ``plan`` ask here).

vLLM serves LoRA adapters only for model classes that implement its ``SupportsLoRA`` interface:
Llama, Mistral, Qwen2/3 and Gemma 2/3 do; GPT-NeoX (open-calm, both rinna models) and GPT-2 do not,
so ``LLM(enable_lora=True)`` fails for them. hf (transformers + peft) and lm-eval (which runs hf)
serve every architecture here. ``auto`` picks vLLM on a GPU where it serves the model, else hf.
"""

from __future__ import annotations

import importlib.util

from switchpoint.core import modeling
from switchpoint.core.contract import JobError

# models.yaml family -> the transformers/vLLM model class it loads as.
ARCHITECTURES = {"gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
                 "gemma3": "Gemma3ForCausalLM", "gpt2": "GPT2LMHeadModel"}
VLLM_LORA = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM",
             "Gemma3ForCausalLM"}


def architecture(entry: dict) -> str:
    return ARCHITECTURES.get(entry["family"], entry["family"])


def vllm_serves_lora(entry: dict) -> bool:
    return architecture(entry) in VLLM_LORA


def unsupported(engine: str, entry: dict) -> str | None:
    """Why ``engine`` cannot serve this model's adapters (None when it can), whatever the machine."""
    if engine == "vllm" and not vllm_serves_lora(entry):
        return (f"vLLM does not serve LoRA adapters for {architecture(entry)} (model {entry['name']}); "
                "use --engine hf or lm-eval")
    return None


def choose_engine(requested: str, entry: dict, *, cuda: bool | None = None,
                  vllm_installed: bool | None = None) -> tuple[str, str]:
    """(engine, why): an explicit engine the model cannot use is an error; ``auto`` says what it chose."""
    reason = unsupported(requested, entry)
    if reason:
        raise JobError(f"--engine {requested}: {reason}")
    cuda = modeling.cuda_available() if cuda is None else cuda
    vllm_installed = importlib.util.find_spec("vllm") is not None if vllm_installed is None else vllm_installed
    if requested == "vllm" and not (cuda and vllm_installed):
        raise JobError("--engine vllm needs a CUDA GPU and vLLM (switchpoint[vllm]); "
                       f"{'vLLM is not installed' if cuda else 'no CUDA GPU is visible'}: use --engine hf or auto")
    if requested != "auto":
        return requested, "asked for"
    if not cuda:
        return "hf", "auto: no CUDA GPU, so hf"
    if not vllm_serves_lora(entry):
        return "hf", f"auto: vLLM does not serve LoRA for {architecture(entry)}, so hf"
    if not vllm_installed:
        return "hf", "auto: vLLM is not installed (switchpoint[vllm]), so hf"
    return "vllm", f"auto: a GPU, and vLLM serves LoRA for {architecture(entry)}"
