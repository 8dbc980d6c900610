"""Deployment artifacts: TF Serving SavedModels, TFSMLayer, TFLite, ONNX, each verified.

Needs the ``export`` extra (tensorflow-serving-api, ai-edge-litert, and the
``onnx`` extra for ONNX). Each format is a module of ``formats``.
"""

from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.formats.savedmodel import run_in_fresh_process, write_serving_version
from tf_conv3dt.export.models import load_model, reference_model
from tf_conv3dt.export.run import Progress, export_model
from tf_conv3dt.export.summary import format_report

__all__ = ["ExportError", "Progress", "export_model", "format_report", "load_model",
           "reference_model", "run_in_fresh_process", "write_serving_version"]
