"""Classifier architectures (plain Keras, no Horovod): a registry keyed by name, built from the dataset's shape."""
from __future__ import annotations

from typing import Callable


def _lenet(input_shape: tuple[int, int, int], num_classes: int):
    """LeNet-5 style: two conv/pool stages and two dense layers."""
    from tensorflow import keras
    from tensorflow.keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    outputs = layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, outputs, name="lenet")


def _residual_block(x, filters: int, stride: int):
    from tensorflow.keras import layers

    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _resnet_small(input_shape: tuple[int, int, int], num_classes: int):
    """A small ResNet: a conv stem and three stages of two residual blocks (32, 64, 128 filters)."""
    from tensorflow import keras
    from tensorflow.keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for stage, filters in enumerate((32, 64, 128)):
        for block in range(2):
            x = _residual_block(x, filters, stride=2 if block == 0 and stage > 0 else 1)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet_small")


CLASSIFIERS: dict[str, Callable] = {"lenet": _lenet, "resnet_small": _resnet_small}


def build_classifier(name: str, input_shape: tuple[int, int, int], num_classes: int):
    """A Keras classifier producing logits; raises ValueError for an unknown name."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose one of {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[name](tuple(input_shape), num_classes)
