"""The hydrology model of pipeline B: a Keras 3 LSTM mapping a forcing sequence to the last day's flow."""

from __future__ import annotations

from typing import Any


def build_lstm(seq_len: int, n_features: int, hidden: int = 64, dropout: float = 0.2, lr: float = 2e-3) -> Any:
    """Compiled ``keras.Model``: ``(seq_len, features)`` -> streamflow of the sequence's last day.

    The usual single-basin-group LSTM of Kratzert et al. (2018), smaller: one LSTM layer,
    dropout, a linear head; MSE on the normalised target; Adam. Build it inside
    ``strategy.scope()``. The output has shape ``(1, 1)`` to match the core's one-step
    window targets (``horizon=1``, one target column).
    """
    import keras

    inputs = keras.Input((seq_len, n_features), name="forcing")
    h = keras.layers.LSTM(hidden, name="lstm")(inputs)
    h = keras.layers.Dropout(dropout)(h)
    out = keras.layers.Reshape((1, 1))(keras.layers.Dense(1, name="head")(h))
    model = keras.Model(inputs, out, name="camels_lstm")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model
