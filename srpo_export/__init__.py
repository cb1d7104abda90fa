"""Export: checkpoints become ONNX models (to_onnx) and TensorRT engines (to_trt), verified against a reference."""
