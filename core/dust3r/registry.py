"""The released DUSt3R checkpoints: names, download locations, sizes, licence (torch-free).

The weights are not ours and not bundled: the user downloads them (see :mod:`.download`), and
their licence (CC BY-NC-SA 4.0, non-commercial, plus the terms of the training sets) binds the
user.
"""

from __future__ import annotations

from dataclasses import dataclass

PTH_BASE_URL = "https://download.europe.naverlabs.com/ComputerVision/DUSt3R/"
HF_BASE_URL = "https://huggingface.co/naver/"
LICENCE = "CC BY-NC-SA 4.0 (non-commercial; also bound by the terms of the training data sets)"


@dataclass(frozen=True)
class WeightsInfo:
    """One released checkpoint.

    Attributes:
        name: official name, also the ``.pth`` file stem and the Hugging Face repository name.
        preset: key of :data:`.config.PRESETS` giving its architecture.
        approx_size_bytes: about the size of either file (float32 tensors of the unique
            parameters; the ``.pth`` and the safetensors file differ by a few kB of headers).
        licence: licence of the weights.
    """

    name: str
    preset: str
    approx_size_bytes: int
    licence: str = LICENCE

    @property
    def pth_file(self) -> str:
        return f"{self.name}.pth"

    @property
    def pth_url(self) -> str:
        """Official download of the pickled checkpoint (``{'model': state dict, 'args': ...}``)."""
        return PTH_BASE_URL + self.pth_file

    @property
    def hf_repo(self) -> str:
        return f"naver/{self.name}"

    @property
    def safetensors_url(self) -> str:
        """The same weights as ``model.safetensors`` on Hugging Face (needs :attr:`config_url`)."""
        return f"{HF_BASE_URL}{self.name}/resolve/main/model.safetensors"

    @property
    def config_url(self) -> str:
        """``config.json`` with the constructor arguments, to sit beside ``model.safetensors``."""
        return f"{HF_BASE_URL}{self.name}/resolve/main/config.json"


WEIGHTS: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        # 571,171,208 and 532,342,784 unique float32 parameters.
        WeightsInfo("DUSt3R_ViTLarge_BaseDecoder_512_dpt", "512_dpt", 2_284_684_832),
        WeightsInfo("DUSt3R_ViTLarge_BaseDecoder_512_linear", "512_linear", 2_129_371_136),
        WeightsInfo("DUSt3R_ViTLarge_BaseDecoder_224_linear", "224_linear", 2_129_371_136),
    )
}
"""Released checkpoints by name; the 512 DPT one gives the best results."""

DEFAULT_WEIGHTS = "DUSt3R_ViTLarge_BaseDecoder_512_dpt"
