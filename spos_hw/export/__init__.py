"""Export to deployment formats: ONNX (``export.onnx``, verified by ``export.verify``), TensorRT engines
(``export.tensorrt``) and a TensorRT-readiness check (``export.trt_check``). ``export_model`` does it all."""

from spos_hw.export.model import export_model

__all__ = ["export_model"]
