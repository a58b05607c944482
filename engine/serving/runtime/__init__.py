"""Runtime backends for the two exported parts (vision encoder, space decoder): torch, onnxruntime, tensorrt.
The LLM stays PyTorch."""
from engine.serving.runtime.base import Backend, TorchBackend, build_backend

__all__ = ["Backend", "TorchBackend", "build_backend"]
