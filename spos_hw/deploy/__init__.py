"""Deployment formats (what ``spos-hw export`` writes): ONNX (``deploy.onnx``, verified by
``deploy.verify``), TensorRT engines (``deploy.tensorrt``) and a TensorRT-readiness check
(``deploy.trt_check``). ``deploy.model.export_model`` does it all; ``spos_hw.export`` is its API."""
