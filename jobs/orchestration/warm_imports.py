"""Imported only by the local launcher's fork server (launcher.py), never by the runner itself.

Importing this module pays, once per sweep, the ~3.4 s of imports each torch job paid on its own
(torch, transformers' model and generation code, accelerate, peft) and the report's pandas and
matplotlib; every job forked from the server starts with them in memory. A package that is missing
or fails to import is left out: the job then imports it itself and reports the error as it would
in a plain process. Nothing here should initialise CUDA or start a thread pool, so forking stays safe;
a server in which CUDA ended up initialised all the same exits at once (its probe fails: jobs run plain).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys

# Order matters a little: torch before what builds on it. The job modules themselves import their
# heavy dependencies inside functions, so those are named here explicitly.
MODULES = (
    "numpy",
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.generation",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.gpt_neox.modeling_gpt_neox",
    "transformers.models.llama.modeling_llama",
    "transformers.optimization",
    "tokenizers",
    "accelerate",
    "peft",
    "tqdm",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "switchpoint.train.job",
    "switchpoint.infer_local.job",
    "switchpoint.score.job",
    "switchpoint.report.job",
)

IMPORTED: list[str] = []
FAILED: dict[str, str] = {}

for _name in MODULES:
    try:
        importlib.import_module(_name)
        IMPORTED.append(_name)
    except Exception as _err:  # noqa: BLE001 - an optional package: the job reports it itself
        FAILED[_name] = f"{type(_err).__name__}: {_err}".splitlines()[0]


_torch = sys.modules.get("torch")
if _torch is not None and _torch.cuda.is_initialized():  # forked jobs could not use CUDA: no server at all
    print("note: importing for the warm launcher initialised CUDA; its server stops", file=sys.stderr, flush=True)
    os._exit(3)  # the probe fails (the server went away), and every job runs as a plain process

_SERVER_PID = os.getpid()


def _leave_at_once() -> None:
    """The server ends when its runner does; tearing torch down takes it ~1.5 s, while it still holds
    the runner's stdout and stderr (a pipe reading them would wait). Registered last, so run first;
    the jobs forked from the server (other pids) exit normally."""
    if os.getpid() == _SERVER_PID:
        os._exit(0)


atexit.register(_leave_at_once)
