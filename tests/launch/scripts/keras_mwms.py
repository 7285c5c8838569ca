"""Keras model + MultiWorkerMirroredStrategy with a custom step (model.fit under MWMS is broken in Keras 3)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import json

import keras
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.1)


@tf.function
def step(x, y):
    def replica(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    per = strategy.run(replica, args=(x, y))
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, per, axis=None)


x = tf.random.stateless_normal((16, 4), seed=(1, index))
for _ in range(3):
    loss = step(x, tf.reduce_sum(x, 1, keepdims=True))
total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
if index == 0:
    print(f"MWMS_OK workers={strategy.num_replicas_in_sync} sum={float(total):g} loss={float(loss):.4f}", flush=True)
