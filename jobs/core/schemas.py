"""The JSON schemas of the manifests (tasks, models, API models, prices, sweeps), in one place.

``switchpoint.core.manifests`` validates every manifest against these; an error names the file, the
key and what was expected.
"""

from __future__ import annotations

from typing import Any

from switchpoint.core.prompts import PROMPT_FORMATS

_SOURCE = {
    "type": "object",
    "required": ["uri", "format"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["hub", "url", "file", "store", "bundled"]},
        "uri": {"type": "string", "minLength": 1},
        # parquet: a Parquet file read with the `datasets` parquet builder (locally, or on the Hub as
        # hf://datasets/<uri>@<revision>/<path>); hub: a Hub dataset by name (no loading scripts).
        "format": {"enum": ["squad-json", "jsonl", "hub", "parquet"]},
        "revision": {"type": "string", "minLength": 1},
        "path": {"type": "string", "minLength": 1},
        "config": {"type": ["string", "null"]},
        "split": {"type": ["string", "null"]},
    },
}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "sources", "fields", "prompt", "generation", "metrics"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "description": {"type": "string"},
        "license": {"type": "string"},
        "sources": {
            "type": "object",
            "required": ["train", "eval"],
            "additionalProperties": False,
            "properties": {"train": _SOURCE, "eval": _SOURCE},
        },
        "bundled": {
            "type": "object",
            "required": ["train", "eval"],
            "additionalProperties": False,
            "properties": {"train": _SOURCE, "eval": _SOURCE},
        },
        "fields": {
            "type": "object",
            "required": ["inputs", "references"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": ["string", "null"]},
                "inputs": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
                "references": {"type": "string"},
            },
        },
        "prompt": {
            "type": "object",
            "required": ["instruction", "input_template"],
            "additionalProperties": False,
            "properties": {
                "instruction": {"type": "string"},
                "input_template": {"type": "string"},
                "truncate_field": {"type": ["string", "null"]},
                "variants": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "shots": {"enum": ["turns", "instruction"]},
                            "shot_template": {"type": "string"},
                        },
                    },
                },
            },
        },
        "generation": {
            "type": "object",
            "required": ["max_new_tokens"],
            "additionalProperties": False,
            "properties": {
                "max_new_tokens": {"type": "integer", "minimum": 1},
                "stop": {"type": "array", "items": {"type": "string"}},
            },
        },
        "metrics": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "primary_metric": {"type": "string"},
        # Typical lengths of the real data, for `plan`'s estimates where the bundled sample is shorter.
        "lengths": {
            "type": "object",
            "required": ["source"],
            "additionalProperties": False,
            "properties": {"input_chars": {"type": "number", "minimum": 1},
                           "reference_chars": {"type": "number", "minimum": 1},
                           "eval_rows": {"type": "integer", "minimum": 1}, "source": {"type": "string"}},
        },
        "sampling": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"unique_field": {"type": ["string", "null"]}},
        },
    },
}

MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["models"],
    "additionalProperties": False,
    "properties": {
        "models": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["source", "family", "lora_target_modules", "prompt_format"],
                "additionalProperties": False,
                "properties": {
                    "source": {"enum": ["hub", "tiny", "local"]},
                    "hub_id": {"type": "string"},
                    "path": {"type": "string"},
                    "revision": {"type": "string"},
                    "family": {"enum": ["gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2"]},
                    "params_b": {"type": "number"},
                    "context_length": {"type": "integer", "minimum": 16},
                    "lora_target_modules": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "prompt_format": {"enum": list(PROMPT_FORMATS)},
                    "add_bos": {"type": "boolean"},
                    "newline": {"type": "string", "minLength": 1},
                    "tokenizer": {"enum": ["auto", "sentencepiece", "tokenizer-json"]},
                    "instance_type": {"type": "string"},
                    "load_in_4bit": {"type": "boolean"},
                    "trust_remote_code": {"type": "boolean"},
                    "license": {"type": "string"},
                    "note": {"type": "string"},
                },
            },
        }
    },
}

_PRICE = {"type": "number", "minimum": 0}
API_MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["api_models"],
    "additionalProperties": False,
    "properties": {
        "api_models": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["bedrock_model_id", "context_window", "input_per_mtok", "output_per_mtok",
                             "batch", "batch_discount", "availability", "cache_min_tokens", "cache_min_tokens_source",
                             "price_date", "price_source"],
                "additionalProperties": False,
                # batch: whether Bedrock batch inference serves the model; then it must have a batch price.
                "if": {"properties": {"batch": {"const": True}}},
                "then": {"properties": {"batch_discount": {"exclusiveMinimum": 0}}},
                "properties": {
                    "bedrock_model_id": {"type": "string"},
                    "batch": {"type": "boolean"},
                    "availability": {
                        "type": "object",
                        "required": ["status", "source"],
                        "additionalProperties": False,
                        "properties": {
                            "status": {"enum": ["active", "legacy", "retired"]},
                            "date": {"type": ["string", "null"]},
                            "source": {"type": "string", "minLength": 1},
                            "replacement": {"type": ["string", "null"]},
                        },
                    },
                    "cache_min_tokens": {"type": ["integer", "null"], "minimum": 1},
                    "cache_min_tokens_source": {"type": "string", "minLength": 1},
                    "inference_profile": {"type": "string"},
                    "region": {"type": "string"},
                    "context_window": {"type": "integer", "minimum": 1},
                    "max_output_tokens": {"type": "integer", "minimum": 1},
                    "input_per_mtok": _PRICE,
                    "output_per_mtok": _PRICE,
                    "batch_discount": {"type": "number", "minimum": 0, "maximum": 1},
                    "cache_write_per_mtok": {"type": ["number", "null"], "minimum": 0},
                    "cache_read_per_mtok": {"type": ["number", "null"], "minimum": 0},
                    "price_date": {"type": "string"},
                    "price_source": {"type": "string"},
                    "note": {"type": "string"},
                },
            },
        }
    },
}

PRICES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["region", "date", "source", "instances"],
    "additionalProperties": False,
    "properties": {
        "region": {"type": "string"},
        "date": {"type": "string"},
        "source": {"type": "string"},
        "note": {"type": "string"},
        "instances": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["on_demand_per_hour", "gpus"],
                "additionalProperties": False,
                "properties": {
                    "on_demand_per_hour": _PRICE,
                    "spot_per_hour": {"type": ["number", "null"], "minimum": 0},
                    "gpus": {"type": "integer", "minimum": 0},
                    "gpu": {"type": "string"},
                    "gpu_memory_gib": {"type": "number"},
                    "gpu_tflops_bf16": {"type": "number", "minimum": 0},
                    "processing": {"type": "boolean"},
                },
            },
        },
    },
}

SWEEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "sizes", "seeds", "models"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "description": {"type": "string"},
        "tasks": {"type": "array", "items": {"type": "string"}},
        "data": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {"enum": ["remote", "bundled"]},
                "eval_size": {"type": ["integer", "null"], "minimum": 1},
                "sizes": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
            },
        },
        "sizes": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}, "uniqueItems": True},
        "seeds": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}, "uniqueItems": True},
        # Adaptive sweep (orchestration/rounds.py): train only the sizes that can still change the
        # answer, round by round; `sizes` is then the grid it walks (and what `plan` prices: the worst case).
        "adaptive": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "margin": {"type": "number", "minimum": 0},
                "max_gpu_hours": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "max_usd": {"type": ["number", "null"], "exclusiveMinimum": 0},
            },
        },
        # Every seed is drawn only for N <= seeds_up_to_n; larger N use the first seed (null: every N).
        "seeds_up_to_n": {"type": ["integer", "null"], "minimum": 0},
        # A packaged model by name, or a user's own model: {name: ..., source: hub, hub_id, revision, ...}.
        "models": {"type": "array", "items": {"type": ["string", "object"]}},
        "api_models": {"type": "array", "items": {"type": "string"}},
        "fewshot_local": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean"}, "shots": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
        },
        "fewshot_api": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "shots": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "variants": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                # One mode for every API model, or a mapping {api model: mode} (auto where not named).
                "mode": {"anyOf": [{"enum": ["auto", "batch", "on-demand"]},
                                   {"type": "object", "additionalProperties": {"enum": ["auto", "batch", "on-demand"]}}]},
                "max_usd": {"type": ["number", "null"], "minimum": 0},
                "role_arn": {"type": ["string", "null"]},
                "s3_prefix": {"type": ["string", "null"]},
                "region": {"type": ["string", "null"]},
            },
        },
        # Besides where and how it runs (instance_type, spot, max_runtime_s), a sweep's train: section
        # holds the train job's own settings; those keys, their defaults and ranges live in one place,
        # switchpoint.train.settings.Settings, which the pre-flight (plan) parses them with.
        "train": {
            "type": "object",
            "properties": {
                "instance_type": {"type": "string"},
                "spot": {"type": "boolean"},
                "max_runtime_s": {"type": "integer", "minimum": 60},
            },
        },
        # Likewise the infer: section's engine and batch_size are the infer-local job's settings.
        "infer": {
            "type": "object",
            "properties": {
                "instance_type": {"type": "string"},
            },
        },
        "score": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"bootstrap": {"type": "integer", "minimum": 100}, "instance_type": {"type": "string"}},
        },
        "images": {"type": "object", "additionalProperties": {"type": "string"}},
        "sagemaker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "role_arn": {"type": ["string", "null"]},
                "region": {"type": ["string", "null"]},
                "volume_gb": {"type": "integer", "minimum": 1},
            },
        },
    },
}
