"""Reading a task's sources into canonical records: files, URLs, the store, the Hub (Parquet).

Real XL-Sum lives on the Hub as a loading-script dataset, which ``datasets`` 4+ refuses; the Hub's
own Parquet conversion (branch ``refs/convert/parquet``) is read instead. Its file is fetched into the
Hugging Face cache at the pinned revision (``hf_hub_download``: offline, the cached copy is used, as
for the models) and read like any local Parquet file. The tests lay out a hub-cache replica of the
dataset and run this very path with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchpoint.core import manifests
from switchpoint.core.contract import JobError
from switchpoint.core.store import open_store

OFFLINE_HINT = "offline, run the bundled data with SWEEP=smoke (or --source bundled)"


# --- reading sources -------------------------------------------------------------------------
@dataclass
class RawRow:
    where: str  # "file:line" or "file#item", for error messages
    value: dict[str, Any]


def _read_local_or_remote(source: dict, role: str) -> tuple[bytes, str]:
    kind = source.get("type", "file")
    uri = source["uri"]
    if kind in ("file", "bundled"):
        path = Path(uri) if kind == "file" else manifests.bundled_dir() / uri
        try:
            return path.read_bytes(), str(path)
        except OSError as err:
            raise JobError(f"{role} source {path}: cannot read ({err.strerror or err})") from err
    if kind == "url":
        try:
            with urllib.request.urlopen(uri, timeout=30) as response:
                return response.read(), uri
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise JobError(f"{role} source {uri}: cannot reach it ({getattr(err, 'reason', err)}); {OFFLINE_HINT}") from err
    if kind == "store":
        parent, _, name = uri.rstrip("/").rpartition("/")
        store = open_store(parent)
        return store.read_bytes(name), uri
    raise JobError(f"{role} source {uri}: type {kind!r} cannot be read as a file")


def read_source(source: dict, role: str) -> list[RawRow]:
    """Rows of a source: SQuAD-JSON flattened to one row per question, JSONL as is, Parquet, or a Hub split."""
    if source["format"] == "parquet":
        if source.get("type") in ("url", "store"):  # fetched whole, read from memory
            data, where = _read_local_or_remote(source, role)
            return read_parquet(data, role, where=where)
        return read_parquet(parquet_file(source, role), role, where=parquet_location(source))
    if source.get("type") == "hub" or source["format"] == "hub":
        return _read_hub(source, role)
    data, where = _read_local_or_remote(source, role)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JobError(f"{where}: not UTF-8 text ({err})") from err
    if source["format"] == "squad-json":
        return _flatten_squad(text, where)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise JobError(f"{where}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(value, dict):
            raise JobError(f"{where}:{lineno}: expected a JSON object, got {type(value).__name__}")
        rows.append(RawRow(f"{where}:{lineno}", value))
    return rows


def parquet_location(source: dict) -> str:
    """Where a Parquet source lives: ``hf://datasets/<repo>@<revision>/<path>`` for the Hub (the
    revision URL-quoted, since ``refs/convert/parquet`` holds slashes), else a local file or a URL."""
    kind = source.get("type", "file")
    if kind == "hub":
        if "path" not in source or "revision" not in source:
            raise JobError(f"source hub:{source['uri']}: a Parquet file on the Hub needs 'path' and a pinned 'revision'")
        revision = urllib.parse.quote(source["revision"], safe="")
        return f"hf://datasets/{source['uri']}@{revision}/{source['path']}"
    if kind == "bundled":
        return str(manifests.bundled_dir() / source["uri"])
    if kind in ("file", "url", "store"):
        return source["uri"]
    raise JobError(f"source {source['uri']}: type {kind!r} cannot hold a Parquet file (use file, url, store or hub)")


def parquet_file(source: dict, role: str) -> str:
    """The local path of a Parquet source: a Hub file is fetched into the Hugging Face cache at its
    pinned revision once (later runs, and offline runs, read the cached copy)."""
    if source.get("type", "file") != "hub":
        return parquet_location(source)
    location = parquet_location(source)  # checks path and revision
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise JobError("a Hub source needs huggingface_hub: pip install 'switchpoint[hub]'") from err
    try:
        return hf_hub_download(source["uri"], source["path"], repo_type="dataset", revision=source["revision"])
    except Exception as err:  # the Hub's errors (offline and not cached, no such repo/revision/file, HTTP)
        first = str(err).splitlines()[0] if str(err) else ""
        raise JobError(f"{role} source {location}: cannot fetch it ({type(err).__name__}: {first}); {OFFLINE_HINT}") from err


def read_parquet(path: str | bytes, role: str, where: str | None = None) -> list[RawRow]:
    """Rows of one Parquet file, a local path or its bytes; ``where`` names it in errors and row
    addresses (the Hub address for a Hub file)."""
    where = where or str(path)
    if isinstance(path, str) and not Path(path).is_file():
        raise JobError(f"{role} source {where}: cannot read (no such file)")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise JobError("a Parquet source needs pyarrow: pip install 'switchpoint[hub]'") from err
    try:
        rows = pq.read_table(pa.BufferReader(path) if isinstance(path, bytes) else path).to_pylist()
    except Exception as err:  # pyarrow's ArrowInvalid / OSError on a file that is not Parquet
        first = str(err).splitlines()[0] if str(err) else ""
        raise JobError(f"{role} source {where}: not a readable Parquet file ({type(err).__name__}: {first})") from err
    return [RawRow(f"{where}#row{i}", row) for i, row in enumerate(rows)]


def _flatten_squad(text: str, where: str) -> list[RawRow]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobError(f"{where}: not valid SQuAD JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise JobError(f"{where}: SQuAD JSON needs a top-level 'data' list")
    rows = []
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                loc = f"{where}#data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict) or "answers" not in qa:
                    raise JobError(f"{loc}: field 'answers' is missing")
                rows.append(RawRow(loc, {
                    "id": qa.get("id"), "title": article.get("title", ""), "context": paragraph.get("context"),
                    "question": qa.get("question"), "answers": [ans.get("text") for ans in qa["answers"]],
                }))
    return rows


def _read_hub(source: dict, role: str) -> list[RawRow]:
    try:
        import datasets
    except ImportError as err:
        raise JobError("a Hub source needs the datasets library: pip install 'switchpoint[hub]'") from err
    try:
        split = datasets.load_dataset(source["uri"], source.get("config"), split=source.get("split") or role,
                                      revision=source.get("revision"))
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise JobError(f"{role} source hub:{source['uri']}: cannot load it ({type(err).__name__}: {first}); {OFFLINE_HINT}") from err
    return [RawRow(f"hub:{source['uri']}[{i}]", dict(row)) for i, row in enumerate(split)]


# --- canonical records -----------------------------------------------------------------------
def to_canonical(rows: Iterable[RawRow], task: dict, role: str) -> list[dict[str, Any]]:
    """Map source fields to the canonical schema; a missing or wrong-typed field names its row."""
    mapping = task["fields"]
    out = []
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {}
        id_field = mapping.get("id")
        if id_field:
            if row.value.get(id_field) in (None, ""):
                raise JobError(f"{row.where}: field {id_field!r} (id) is missing or empty")
            rec["id"] = str(row.value[id_field])
        else:
            rec["id"] = f"{task['name']}-{role}-{i:06d}"
        for name, source_field in mapping["inputs"].items():
            value = row.value.get(source_field)
            if not isinstance(value, str) or not value.strip():
                raise JobError(f"{row.where}: field {source_field!r} (input {name!r}) is missing or not a non-empty string")
            rec[name] = value
        refs = row.value.get(mapping["references"])
        if isinstance(refs, str):
            refs = [refs]
        if isinstance(refs, dict) and "text" in refs:  # Hub SQuAD layout: {"text": [...], "answer_start": [...]}
            refs = refs["text"]
        if isinstance(refs, list):
            refs = [r.get("text") if isinstance(r, dict) else r for r in refs]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise JobError(f"{row.where}: field {mapping['references']!r} (references) must be a non-empty string or list of non-empty strings")
        rec["references"] = refs
        out.append(rec)
    return out


