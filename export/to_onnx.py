#!/usr/bin/env python3
"""Export a policy checkpoint to ONNX, verified against PyTorch (same as ``srpo export onnx``).

    python export/to_onnx.py runs/sft/final --out exports/sft [--data data/demos] [--atol 1e-4]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout without installing

from srpo_export.to_onnx import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
