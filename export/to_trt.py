#!/usr/bin/env python3
"""Build a TensorRT engine from an exported policy graph, optionally checked against ONNX Runtime.

    python export/to_trt.py exports/sft/model.onnx --out exports/sft [--fp16] [--min-batch 1] [--opt-batch 1]
                            [--max-batch 16] [--workspace-gb 2] [--check] [--force]

Needs tensorrt, cuda-python and an NVIDIA GPU; without them it says which is missing and exits with code 2.
See srpo_export/to_trt.py for what the engine directory holds and when an engine is reused.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, _ROOT)

from srpo_export.to_trt import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
