"""Batch-norm statistics of the weights a run keeps ("precise BN", Wu & Johnson, "Rethinking 'Batch' in BatchNorm").

A layer's moving mean and variance are exponential averages (momentum 0.99) of batch statistics taken while the
weights moved; after a short run they still hold part of their initial values and trail the weights. Inference then
normalises with statistics no batch ever had: the demo's anomaly VAE (16 epochs of ~18 steps) ended one run with a
validation loss of 303 against a training loss of 164 and an AUROC of 0.874; the same weights with recomputed
statistics scored 1.000.
"""
from __future__ import annotations

# Images per forward pass. Each pass is an eager call, so few and large: 512 images of the demo's VAE took 0.75 s in
# passes of 16 (12 s over its 16 epochs) and 0.19 s in passes of 128.
STATISTICS_BATCH = 128


def batch_norm_layers(model) -> list:
    """Every batch-norm layer of ``model``, nested models included (walked through ``layers``, which Keras 2 and 3
    both have; Keras 3 models have no ``submodules``)."""
    from tensorflow.keras import layers

    found = []
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batch_norm_layers(layer))
    return found


def recompute_statistics(model, images, batch_size: int = STATISTICS_BATCH) -> int:
    """Sets each batch-norm layer's moving mean and variance to the average of its statistics over ``images`` (in
    batches of ``batch_size``) under the current weights, through ``model``'s inference path in training mode;
    returns the number of batches.

    Give it training images in random order: a batch of one class has a smaller variance than the population. No
    other weight changes, and no statistics change without images.
    """
    bn_layers = batch_norm_layers(model)
    momenta = [layer.momentum for layer in bn_layers]
    count = 0
    try:
        for start in range(0, len(images), batch_size):
            # Momentum k/(k+1) on the k-th batch makes the moving value the running mean of the batch statistics.
            # Eager calls: a traced function would freeze the first momentum into its graph.
            for layer in bn_layers:
                layer.momentum = count / (count + 1.0)
            model(images[start:start + batch_size], training=True)
            count += 1
    finally:
        for layer, momentum in zip(bn_layers, momenta):
            layer.momentum = momentum
    return count
