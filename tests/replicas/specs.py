"""What each replica keeps of its real Hub repository: config keys, special tokens, tokenizer files.

Sizes are tiny (hidden 32, 2 layers); everything a loader or a prompt depends on is as published:
config class and keys, special-token ids, context length, rotary/parallel-residual settings, tied
embeddings, tokenizer class and kind of tokenizer file, tokenizer_config.json flags and chat
template, generation_config.json. Where each value comes from: SOURCES.md beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}

# Qwen2.5's chat template (tool branches included), as in Qwen/Qwen2.5-*-Instruct tokenizer_config.json.
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# llm-jp-3 instruct: the system turn is replaced by a fixed header (its content is not rendered), as
# written by llm-jp's own conversion script (llm-jp/instruct3 scripts/ckpt/convert_llama_nemo_to_hf.sh).
LLMJP3_CHAT_TEMPLATE = (
    "{{bos_token}}{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\n### 指示:\\n' + "
    "message['content'] }}{% elif message['role'] == 'system' %}{{ '以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。' }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\n### 応答:\\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '\\n\\n### 応答:\\n' }}{% endif %}{% endfor %}"
)

SARASHINA22_CHAT_TEMPLATE = (
    "{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}\n"
    "{%- macro output_available_tools(tools, message) %}\n{%- endmacro %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] == 'user' %}\n        {{- '<|user|>' + message['content'] + eos_token }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {{- '<|assistant|>' + message['content'] + eos_token }}\n"
    "    {%- elif message['role'] == 'system' %}\n        {{- '<|system|>' + message['content'] + eos_token }}\n"
    "    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|assistant|>' }}\n{%- endif %}"
)

QWEN_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
              "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
              "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_ADDED_NONSPECIAL = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                         "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]


@dataclass
class ReplicaSpec:
    hub_id: str
    tokenizer_kind: str  # bytelevel-bpe (tokenizer.json) | spm-unigram (spiece.model) | spm-llama (tokenizer.model)
    config: dict
    tokenizer_config: dict
    special_tokens_map: dict | None  # None: the repository ships no special_tokens_map.json (rinna)
    generation_config: dict | None  # None: no generation_config.json (transformers derives it from config.json)
    specials: dict[str, int]  # special token -> its id in the real vocabulary
    vocab_size: int  # the real config's vocab_size (the embedding keeps it)
    spm_options: dict = field(default_factory=dict)
    tokenizer_file: str = "tokenizer.json"
    extra_tokens: dict[str, int] = field(default_factory=dict)  # added, not special (Qwen's tool tags)
    # A tokenizer.json converted from the trained sentencepiece model (spm_json.py names the pipelines), for
    # repositories that publish one; ship_spm False: the repository publishes the tokenizer.json only.
    tokenizer_json: str = ""
    ship_spm: bool = True


def _neox(vocab: int, bos: int, eos: int, **extra) -> dict:
    return {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "bos_token_id": bos, "eos_token_id": eos,
            "hidden_act": "gelu", "initializer_range": 0.02, "intermediate_size": 128, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 2048, "rotary_emb_base": 10000, "rotary_pct": 1.0, "tie_word_embeddings": False,
            "torch_dtype": "float16", "use_cache": True, "use_parallel_residual": False, "vocab_size": vocab,
            **TINY, **extra}


def _llama(vocab: int, ctx: int, bos: int = 1, eos: int = 2, **extra) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": bos, "eos_token_id": eos,
            "hidden_act": "silu", "initializer_range": 0.02, "intermediate_size": 96, "max_position_embeddings": ctx,
            "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
            "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
            "vocab_size": vocab, **TINY, **extra}


# ELYZA's specials as published: AddedToken dicts, not normalized.
ELYZA_ADDED = {t: {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
               for t, c in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
# The 725-byte tokenizer_config.json of the ELYZA-japanese-Llama-2-7b family (keys in the published
# order): no add_bos_token/add_eos_token keys (LlamaTokenizer's defaults apply), pad null.
ELYZA_TOKENIZER_CONFIG = {
    "bos_token": {"__type": "AddedToken", **ELYZA_ADDED["bos_token"]}, "clean_up_tokenization_spaces": False,
    "eos_token": {"__type": "AddedToken", **ELYZA_ADDED["eos_token"]}, "legacy": False,
    "model_max_length": 1000000000000000019884624838656, "pad_token": None, "padding_side": "right",
    "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    "unk_token": {"__type": "AddedToken", **ELYZA_ADDED["unk_token"]}}
LLAMA_SPM = {"model_type": "bpe", "byte_fallback": True, "split_digits": True, "add_dummy_prefix": True,
             "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
             "allow_whitespace_only_pieces": True, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
RINNA_SPM = {"model_type": "unigram", "byte_fallback": True, "add_dummy_prefix": False,
             "remove_extra_whitespaces": False, "pad_id": 0, "pad_piece": "[PAD]", "unk_id": 1, "unk_piece": "[UNK]",
             "bos_id": 2, "eos_id": 3}
# rinna's 284-byte tokenizer_config.json, the same in both repositories (keys in the published order).
RINNA_TOKENIZER_CONFIG = {
    "eos_token": "</s>", "unk_token": "[UNK]", "pad_token": "[PAD]", "extra_ids": 0, "additional_special_tokens": [],
    "sp_model_kwargs": {}, "bos_token": "<s>", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
    "do_lower_case": False, "tokenizer_class": "T5Tokenizer"}
# Swallow's special tokens as published (AddedToken dicts, normalized).
SWALLOW_ADDED = {t: {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
                 for t, c in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}

# llm-jp-tokenizer v3.0's published Hugging Face files (hf/ver3.0/llm-jp-tokenizer-100k.ver3.0b2) and ids
# (its vocabulary's first eight pieces; the converter renames the control pieces to <X|LLM-jp>).
LLMJP3_SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<MASK|LLM-jp>": 3, "<PAD|LLM-jp>": 4, "<CLS|LLM-jp>": 5,
                   "<SEP|LLM-jp>": 6, "<EOD|LLM-jp>": 7}
LLMJP3_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
    "pad_token": "<PAD|LLM-jp>", "cls_token": "<CLS|LLM-jp>", "sep_token": "<SEP|LLM-jp>", "eod_token": "</s>",
    "mask_token": "<MASK|LLM-jp>", "extra_ids": 0, "sp_model_kwargs": {},
    "model_max_length": 1000000000000000019884624838656, "clean_up_tokenization_spaces": False,
    "special_tokens_map_file": None, "tokenizer_class": "PreTrainedTokenizerFast"}
# sarashina2.2's first fifteen pieces (the tokenizer.json's added tokens; byte pieces start at 15).
SARASHINA22_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<sep>", "<mask>", "<cls>", "<|system|>", "<|assistant|>",
                        "<|user|>", "<|available_tools|>", "<|tool_calls|>", "<|tool_results|>", "<|code|>", "<|file|>"]

SPECS: dict[str, ReplicaSpec] = {s.hub_id: s for s in [
    ReplicaSpec(
        hub_id="cyberagent/open-calm-1b", tokenizer_kind="bytelevel-bpe",
        config=_neox(52096, 0, 0, _name_or_path="open-calm-1b", transformers_version="4.27.0.dev0"), vocab_size=52096,
        tokenizer_config={"add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                          "model_max_length": 1000000000000000019884624838656, "pad_token": "<|padding|>",
                          "special_tokens_map_file": "open-calm-1b/special_tokens_map.json",
                          "tokenizer_class": "GPTNeoXTokenizer", "unk_token": "<|endoftext|>"},
        special_tokens_map={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|padding|>",
                            "unk_token": "<|endoftext|>"},
        generation_config={"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 0,
                           "transformers_version": "4.27.0.dev0"},
        specials={"<|endoftext|>": 0, "<|padding|>": 1}),
    ReplicaSpec(
        hub_id="rinna/japanese-gpt-neox-3.6b-instruction-ppo", tokenizer_kind="spm-unigram", tokenizer_file="spiece.model",
        config=_neox(32000, 2, 3), vocab_size=32000,
        tokenizer_config=RINNA_TOKENIZER_CONFIG, special_tokens_map=None, generation_config=None,
        specials={"[PAD]": 0, "[UNK]": 1, "<s>": 2, "</s>": 3}, spm_options={**RINNA_SPM}),
    ReplicaSpec(
        hub_id="rinna/bilingual-gpt-neox-4b-instruction-ppo", tokenizer_kind="spm-unigram", tokenizer_file="spiece.model",
        config=_neox(65536, 2, 3), vocab_size=65536,
        tokenizer_config=RINNA_TOKENIZER_CONFIG, special_tokens_map=None, generation_config=None,
        specials={"[PAD]": 0, "[UNK]": 1, "<s>": 2, "</s>": 3},
        # The bilingual tokenizer keeps "\n" (its card separates utterances with "\n").
        spm_options={**RINNA_SPM, "normalization_rule_name": "identity", "user_defined_symbols": ["\n"]}),
    ReplicaSpec(
        hub_id="elyza/ELYZA-japanese-Llama-2-7b-instruct", tokenizer_kind="spm-llama", tokenizer_file="tokenizer.model",
        config=_llama(32000, 4096, rms_norm_eps=1e-06, pad_token_id=0, torch_dtype="float16",
                      attention_bias=False, attention_dropout=0.0, transformers_version="4.37.2"), vocab_size=32000,
        tokenizer_config=ELYZA_TOKENIZER_CONFIG,
        # 437 bytes as published: pad is "</s>" (id 2), over tokenizer_config's null and config's 0.
        special_tokens_map={"bos_token": ELYZA_ADDED["bos_token"], "eos_token": ELYZA_ADDED["eos_token"],
                            "pad_token": "</s>", "unk_token": ELYZA_ADDED["unk_token"]},
        generation_config={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
        specials={"<unk>": 0, "<s>": 1, "</s>": 2}, spm_options={**LLAMA_SPM},
        tokenizer_json="llama-legacy"),  # the repository ships tokenizer.json (1.84 MB) beside tokenizer.model
    ReplicaSpec(
        hub_id="tokyotech-llm/Swallow-13b-instruct-hf", tokenizer_kind="spm-llama", tokenizer_file="tokenizer.model",
        config=_llama(43176, 4096, pad_token_id=0, attention_bias=False, max_sequence_length=4096,
                      _name_or_path="tokyotech-llm/Swallow-13b-instruct-hf", transformers_version="4.33.2"),
        vocab_size=43176,
        tokenizer_config={"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                          **{k: {"__type": "AddedToken", **v} for k, v in SWALLOW_ADDED.items()},
                          "legacy": True, "model_max_length": 1000000000000000019884624838656, "pad_token": None,
                          "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"},
        special_tokens_map=SWALLOW_ADDED,
        # The card's sampling defaults; every engine here passes greedy decoding explicitly.
        generation_config={"bos_token_id": 1, "do_sample": True, "eos_token_id": 2, "pad_token_id": 0,
                           "temperature": 0.6, "max_length": 4096, "top_p": 0.9, "transformers_version": "4.33.2"},
        specials={"<unk>": 0, "<s>": 1, "</s>": 2}, spm_options={**LLAMA_SPM}),
    ReplicaSpec(
        hub_id="Qwen/Qwen2.5-1.5B-Instruct", tokenizer_kind="bytelevel-bpe",
        config={"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
                "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02,
                "intermediate_size": 96, "max_position_embeddings": 32768, "max_window_layers": 21,
                "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
                "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
                "vocab_size": 151936, **TINY},
        vocab_size=151936,
        tokenizer_config={"add_bos_token": False, "add_prefix_space": False, "bos_token": None,
                          "chat_template": QWEN25_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
                          "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 131072,
                          "pad_token": "<|endoftext|>", "split_special_tokens": False,
                          "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
                          "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                                                        "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                                                        "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                                                        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                                        "<|video_pad|>"]},
        special_tokens_map={"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                                                          "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                                                          "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                                                          "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                                          "<|video_pad|>"],
                            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        generation_config={"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                           "eos_token_id": [151645, 151643], "repetition_penalty": 1.1, "temperature": 0.7,
                           "top_p": 0.8, "top_k": 20},
        specials={t: 151643 + i for i, t in enumerate(QWEN_ADDED)},
        extra_tokens={t: 151643 + len(QWEN_ADDED) + i for i, t in enumerate(QWEN_ADDED_NONSPECIAL)}),
    ReplicaSpec(
        # A tokenizer.json only (Unigram, byte fallback, converted from llm-jp-tokenizer v3.0; no tokenizer.model).
        hub_id="llm-jp/llm-jp-3-1.8b-instruct", tokenizer_kind="spm-unigram", tokenizer_file="tokenizer.json",
        tokenizer_json="llmjp3", ship_spm=False,
        config=_llama(99584, 4096, num_key_value_heads=4), vocab_size=99584,
        tokenizer_config={**LLMJP3_TOKENIZER_CONFIG, "chat_template": LLMJP3_CHAT_TEMPLATE},
        special_tokens_map={"bos_token": "<s>", "cls_token": "<CLS|LLM-jp>", "eod_token": "</s>", "eos_token": "</s>",
                            "mask_token": "<MASK|LLM-jp>", "pad_token": "<PAD|LLM-jp>", "sep_token": "<SEP|LLM-jp>",
                            "unk_token": "<unk>"},
        generation_config={"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2},
        specials=LLMJP3_SPECIALS,
        spm_options={"model_type": "unigram", "byte_fallback": True, "add_dummy_prefix": False,
                     "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                     "allow_whitespace_only_pieces": True, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1,
                     "control_symbols": ["<MASK>", "<PAD>", "<CLS>", "<SEP>", "<EOD>"]}),
    ReplicaSpec(
        # tokenizer.model (sentencepiece unigram, chat specials as CONTROL pieces) and tokenizer.json; GQA 16:8.
        hub_id="sbintuitions/sarashina2.2-1b-instruct-v0.1", tokenizer_kind="spm-unigram", tokenizer_file="tokenizer.model",
        tokenizer_json="metaspace-never",
        config=_llama(102400, 8192, pad_token_id=3, tie_word_embeddings=False, num_key_value_heads=2,
                      rope_theta=500000.0), vocab_size=102400,
        # Keys as the family's published file begins (sarashina2.2-3b's tokenizer_config page): the first
        # fifteen pieces as special added tokens; add_dummy_prefix_space is sbintuitions' own key.
        tokenizer_config={"add_bos_token": False, "add_dummy_prefix_space": False, "add_eos_token": False,
                          "add_prefix_space": False,
                          "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                                            "rstrip": False, "single_word": False, "special": True}
                                                   for i, t in enumerate(SARASHINA22_SPECIALS)},
                          "bos_token": "<s>",
                          "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
                          "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
                          "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
                          "chat_template": SARASHINA22_CHAT_TEMPLATE,
                          "additional_special_tokens": ["<|system|>", "<|assistant|>", "<|user|>"]},
        special_tokens_map={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                            "additional_special_tokens": ["<|system|>", "<|assistant|>", "<|user|>"]},
        generation_config={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3},
        specials={t: i for i, t in enumerate(SARASHINA22_SPECIALS)},
        spm_options={"model_type": "unigram", "byte_fallback": True, "add_dummy_prefix": False,
                     "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                     "allow_whitespace_only_pieces": True, "split_digits": True, "unk_id": 0, "bos_id": 1,
                     "eos_id": 2, "pad_id": 3, "control_symbols": SARASHINA22_SPECIALS[4:]}),
]}
