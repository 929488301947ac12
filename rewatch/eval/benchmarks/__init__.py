"""The five benchmarks of the paper, one file each; importing this package registers them."""

from rewatch.eval.benchmarks import (  # noqa: F401  (registration by import)
    cg_av_counting,
    minerva,
    vcr_bench,
    video_holmes,
    videomathqa,
)
from rewatch.eval.benchmarks.base import (
    MODES,
    REGISTRY,
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    JudgeRequest,
    ScoreOptions,
    UnsafePathError,
    get_benchmark,
    limit_items,
    names,
    register,
    safe_video_path,
)

__all__ = ["MODES", "REGISTRY", "BenchScore", "Benchmark", "BenchmarkFormatError", "EvalItem",
           "JudgeRequest", "ScoreOptions", "UnsafePathError", "get_benchmark", "limit_items",
           "names", "register", "safe_video_path"]
