"""Deployment artifacts: TF Serving SavedModels, TFSMLayer, TFLite, verification.

Needs the ``export`` extra (tensorflow-serving-api, ai-edge-litert).
"""

from tf_conv3dt.export.pipeline import (FORMATS, export_model, format_report, load_model,
                                        reference_model, run_in_fresh_process)
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.serving import write_serving_version

__all__ = ["FORMATS", "ExportError", "export_model", "format_report", "load_model",
           "reference_model", "run_in_fresh_process", "write_serving_version"]
