"""Where the model looked: class-activation maps of trained classifiers, and their figures.

Method: HiResCAM (Draper et al., 2021) at each backbone's feature layer, which its
``ModelSpec.features`` names (``tlmed_keras.models.features``): a CNN's last convolutional
block, a transformer's last block's patch tokens. For a class score ``y`` and the feature map
``A`` (``[h, w, C]``, or one row per patch token), the map is
``relu(sum_k dy/dA[i, j, k] * A[i, j, k])``, bilinearly resized to the input and scaled to a
maximum of 1. Why HiResCAM rather than Grad-CAM: Grad-CAM first averages the gradient over
the map, ``relu(sum_k mean_ij(dy/dA[..., k]) * A[i, j, k])``. Behind global average pooling and
a linear head (most of the zoo) the gradient is the same at every position, so both are the
same map, the class's own CAM, whose cells add up exactly to the class score (less the
bias). Where the head is not linear in the map (AlexNet's fully connected layers, a max-pool
after VGG's last convolution, a transformer's last block and norm) Grad-CAM's average can
light up cells whose own gradient is zero; HiResCAM keeps each cell's own gradient. The class
is the predicted one (the top probability; the top label of a multi-label set), and the score
is its logit. An ensemble's map is the mean of its members' maps, each scaled to a maximum of
1 first (members count equally) and resized to the input.

Layering: this package stands between the model zoo and the jobs. It imports
``tlmed_keras.models`` (the feature layers) and Keras, never a job; ``predict`` (``--explain``)
and ``evaluate`` (``--explain=K``) both import it, and neither imports the other. It takes
Keras models and names, not run directories, so it needs nothing from ``train``.

``cam`` computes maps; ``gradients`` holds the one backend-specific function (TensorFlow's
GradientTape, JAX's ``value_and_grad``); ``figures`` draws them (matplotlib, Agg).
"""
