"""Language models behind one small protocol, and the offline registry of model packs.

Heavy libraries (llama_cpp, transformers, torch, peft) load only when a backend is created.
"""

from kdsl.errors import ModelError
from kdsl.models.base import (
    BackendSpec,
    Generation,
    LabelScores,
    Message,
    ModelBackend,
    ModelInfo,
    Usage,
    UsageSnapshot,
    backend_class,
    backend_names,
    load_backend,
    register_backend,
)
from kdsl.models.packs import PACKS, Pack, PackPart
from kdsl.models.registry import (
    PackStatus,
    ResolvedModel,
    VerifyReport,
    get_pack,
    hf_path,
    list_packs,
    pack_path,
    pull,
    resolve_gguf,
    resolve_hf,
    verify,
)

__all__ = [
    "PACKS", "BackendSpec", "Generation", "LabelScores", "Message", "ModelBackend", "ModelError", "ModelInfo",
    "Pack", "PackPart", "PackStatus", "ResolvedModel", "Usage", "UsageSnapshot", "VerifyReport",
    "backend_class", "backend_names", "get_pack", "hf_path", "list_packs", "load_backend", "pack_path", "pull",
    "register_backend", "resolve_gguf", "resolve_hf", "verify",
]
