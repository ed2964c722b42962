"""EfficientNet-B0 from keras.applications: a whole backbone in one registration."""

from tlmed_keras.data.preprocess import Normalization
from tlmed_keras.models.keras_apps import register_app

register_app(
    name="efficientnet_b0",
    constructor="EfficientNetB0",
    feature_layer="top_activation",
    block_pattern=r"^(block\d+[a-z])_",  # block1a .. block7a; top_conv joins the last
    # keras.applications' EfficientNet rescales and normalises inside: raw [0, 255] in.
    normalization=Normalization(scale=1.0),
    num_blocks=16,
    input_size=224,
    min_input_size=32,
)
