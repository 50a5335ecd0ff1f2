"""The accelerators a cost is measured against: their published dense peaks and memory bandwidth."""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


@dataclass(frozen=True)
class Accelerator:
    """An accelerator's published peaks: dense BF16/FP16 tensor-core FLOP/s (``peak_flops``), dense FP8
    (``peak_fp8``; None where it has no FP8 tensor cores: FP8 work then runs at the BF16 peak), plain FP32
    (``peak_fp32``, the non-tensor-core figure), HBM bandwidth and NVLink bandwidth (bytes/s, both directions
    together, as the data sheets give it)."""

    name: str
    peak_flops: float
    bandwidth: float
    source: str
    peak_fp8: float | None = None
    peak_fp32: float | None = None
    nvlink: float | None = None

    @property
    def ridge(self) -> float:
        """The BF16 ridge point in FLOPs per byte: an operation with less arithmetic intensity is memory-bound."""
        return self.peak_flops / self.bandwidth

    def peak(self, dtype: str) -> float:
        """Dense FLOP/s for work in ``dtype`` (fp8 without FP8 tensor cores: the BF16 peak)."""
        if dtype == "fp8":
            return self.peak_fp8 or self.peak_flops
        if dtype == "fp32":
            return self.peak_fp32 or self.peak_flops
        return self.peak_flops

    def effective_dtype(self, dtype: str) -> str:
        """The dtype whose peak ``dtype``'s work runs at here (A100 runs FP8 work as BF16)."""
        return "bf16" if dtype == "fp8" and self.peak_fp8 is None else dtype


# Dense figures only: the data sheets' "with sparsity" numbers are 2x and need 2:4 structured weights.
#   A100 SXM4 80GB: NVIDIA A100 Tensor Core GPU data sheet (2021): BF16/FP16 312 TFLOPS, no FP8, FP32 19.5 TFLOPS,
#     HBM2e 2,039 GB/s, NVLink 600 GB/s.
#   H100 SXM5: NVIDIA H100 Tensor Core GPU data sheet (2023): BF16/FP16 1,979 TFLOPS with sparsity = 989.4 dense,
#     FP8 3,958 with sparsity = 1,979 dense, FP32 67 TFLOPS, HBM3 3.35 TB/s, NVLink 900 GB/s.
#   B200 in HGX B200 (1,000 W): NVIDIA HGX B200 data sheet (2024), per GPU: FP16/BF16 4.5 PFLOPS with sparsity =
#     2.25 dense, FP8 9 with sparsity = 4.5 dense, FP32 75 TFLOPS (600 for 8 GPUs), HBM3e 8 TB/s (other NVIDIA
#     pages give 7.7 TB/s; this data sheet's 8 is used), NVLink 1.8 TB/s.
ACCELERATORS: dict[str, Accelerator] = {
    "A100": Accelerator(
        "A100 SXM4 80GB", 312e12, 2.039e12, "NVIDIA A100 data sheet (dense BF16, HBM2e)", None, 19.5e12, 600e9
    ),
    "H100": Accelerator(
        "H100 SXM5", 989.4e12, 3.35e12, "NVIDIA H100 data sheet (dense BF16, HBM3)", 1979e12, 67e12, 900e9
    ),
    "B200": Accelerator(
        "HGX B200", 2.25e15, 8.0e12, "NVIDIA HGX B200 data sheet (dense BF16, HBM3e)", 4.5e15, 75e12, 1.8e12
    ),
}


def accelerator(name: str | Accelerator) -> Accelerator:
    """``ACCELERATORS[name]``, with a clear error for an unknown name."""
    if isinstance(name, Accelerator):
        return name
    if name not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {name!r}: choose one of {', '.join(ACCELERATORS)}")
    return ACCELERATORS[name]
