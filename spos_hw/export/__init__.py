"""Export to deployment formats: ONNX (``export.onnx``) and, later, TensorRT engines."""
