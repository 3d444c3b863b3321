"""Checks on LoRA adapters and their targets that run before a base model's weights load.

A base model can take minutes to load; a truncated ``adapter_model.safetensors``, a corrupt
``adapter_config.json`` or a LoRA target module the model does not have must fail before that, as
one line naming the file or the module. Module names come from the model built from its config on
the meta device (no weights, no memory), which has exactly the module tree the loaded model has.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Iterable

from switchpoint.core.contract import JobError

SAFETENSORS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict, or a one-line error naming the file."""
    path = Path(adapter_dir) / CONFIG
    if not path.is_file():
        raise JobError(f"{path}: missing; the adapter folder is incomplete (re-run `switchpoint train` for it)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: not valid JSON ({err}); re-run `switchpoint train` for this adapter") from None
    if not isinstance(config, dict) or not isinstance(config.get("r"), int) or not config.get("target_modules"):
        raise JobError(f"{path}: expected a peft LoRA config with an integer 'r' and 'target_modules'")
    return config


def check_safetensors(path: Path) -> None:
    """The file exists, its header is readable JSON and the file is as long as the header says."""
    path = Path(path)
    if not path.is_file():
        raise JobError(f"{path}: missing; the adapter folder is incomplete (re-run `switchpoint train` for it)")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8:
                raise ValueError(f"header of {length} bytes in a {size}-byte file")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        raise JobError(f"{path}: not a readable safetensors file ({err}); re-run `switchpoint train` for it") from None
    if 8 + length + end > size:
        raise JobError(f"{path}: truncated ({size} bytes, the header needs {8 + length + end}); "
                       "re-run `switchpoint train` for this adapter")


def check_adapter_files(adapter_dir: Path) -> dict[str, Any]:
    """Every file infer-local reads from an adapter folder, checked; returns its LoRA config."""
    config = read_adapter_config(adapter_dir)
    check_safetensors(Path(adapter_dir) / SAFETENSORS)
    return config


def module_names(entry: dict) -> set[str]:
    """Names of every module of the model ``entry`` describes, built on the meta device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = model_config(entry)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=entry.get("trust_remote_code", False))
    return {name for name, _ in model.named_modules() if name}


def model_config(entry: dict) -> Any:
    """The transformers config of a models.yaml entry (a tiny model's is built, not read)."""
    if entry["source"] == "tiny":
        from switchpoint.core.tiny import tiny_config

        return tiny_config(entry["family"], vocab_size=64, context_length=int(entry.get("context_length", 4096)))
    from transformers import AutoConfig

    where = entry["hub_id"] if entry["source"] == "hub" else entry["path"]
    try:
        return AutoConfig.from_pretrained(where, revision=entry.get("revision"),
                                          trust_remote_code=entry.get("trust_remote_code", False))
    except (OSError, ValueError) as err:
        raise JobError(f"model {entry.get('name', where)}: cannot read the config of {where!r} "
                       f"({str(err).splitlines()[0]}); check the Hub id, revision and network") from None


def missing_targets(targets: str | Iterable[str], names: set[str]) -> list[str]:
    """The LoRA target modules that match no module name, by peft's rule (a name or a dotted suffix;
    a single string is a regular expression over the full name)."""
    if isinstance(targets, str):
        return [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    return [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]


def check_targets(entry: dict, targets: str | Iterable[str], where: str, names: set[str] | None = None) -> None:
    """One-line error naming ``where`` (the setting or file the targets come from) and the missing names."""
    names = module_names(entry) if names is None else names
    missing = missing_targets(targets, names)
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise JobError(f"{where}: LoRA target module(s) {', '.join(missing)} not in model {entry.get('name')!r}; "
                       f"its module names end in: {', '.join(leaves)}")
