"""fastscale.nn: a Keras-style training stack on the fastscale ops.

    from fastscale import nn, optim
    model = nn.Sequential([nn.Embedding(10000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=64, validation_split=0.2)

Layers have explicit forward / backward; ``Embedding -> GlobalAveragePooling1D`` runs as one
fused ``embedding_bag``.  ``model.save(path)`` / ``nn.load_model(path)`` keep everything
needed to predict or resume training in one checksummed file.
"""
from . import callbacks, initializers, losses, metrics, regularizers
from .callbacks import Callback, EarlyStopping, History, LearningRateScheduler, ModelCheckpoint, ReduceLROnPlateau
from .layers import Dense, Dropout, Embedding, EmbeddingBag, Flatten, GlobalAveragePooling1D, GlobalMaxPooling1D, Layer
from .model import Input, Sequential, TrainingDivergedError
from .saving import load_model

__all__ = [
    "initializers",
    "Callback",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "EmbeddingBag",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "History",
    "Input",
    "Layer",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "Sequential",
    "TrainingDivergedError",
    "callbacks",
    "load_model",
    "losses",
    "metrics",
]
