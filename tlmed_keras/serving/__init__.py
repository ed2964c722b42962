"""SavedModel export in TF Serving's layout, its verification, and a checked ``predict``."""

from tlmed_keras.serving.savedmodel import ExportResult, export_savedmodel
from tlmed_keras.serving.signature import (
    INPUT_NAME,
    ServingSpec,
    serving_spec,
    validate_images,
)
from tlmed_keras.serving.verify import (
    ExportVerificationError,
    describe_signature,
    keras_reference,
    predict,
    verify_savedmodel,
)

__all__ = [
    "INPUT_NAME",
    "ExportResult",
    "ExportVerificationError",
    "ServingSpec",
    "describe_signature",
    "export_savedmodel",
    "keras_reference",
    "predict",
    "serving_spec",
    "validate_images",
    "verify_savedmodel",
]
