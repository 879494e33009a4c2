"""Train a small CNN on scikit-learn's digits with TensorFlow/Keras: an ordinary custom
training loop that talks to Capsule only through the `run` it is given."""

import keras
import numpy as np
import tensorflow as tf
from models.cnn import digits_cnn
from sklearn.datasets import load_digits

from builder import Run

TEST_ROWS = 360  # the last 360 images are held out (a fixed split: no RNG involved)


def load(run: Run) -> tuple[np.ndarray, ...]:
    images, labels = load_digits(return_X_y=True)
    x = (images / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = labels.astype(np.int64)
    run.record_arrays("sklearn-digits", x=x, y=y)  # the data's digest goes into the manifest
    split = len(x) - TEST_ROWS
    return x[:split], y[:split], x[split:], y[split:]


def error_rate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    predicted = np.argmax(model(x, training=False).numpy(), axis=1)
    return float(np.mean(predicted != y))


def main(run: Run) -> None:
    p = run.params
    x_train, y_train, x_test, y_test = load(run)
    model = digits_cnn()  # initial weights from the seeded Keras RNG
    optimizer = keras.optimizers.Adam(learning_rate=p["lr"])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step = 0
    for epoch in range(p["epochs"]):
        order = run.order(len(x_train), epoch)
        for start in range(0, len(order), p["batch_size"]):
            idx = order[start : start + p["batch_size"]]
            loss = train_step(x_train[idx], y_train[idx])
            step += 1
            if step % p["checkpoint_every"] == 0:
                run.checkpoint(step, loss, model)
        run.log("train_error", error_rate(model, x_train, y_train), step=epoch + 1)
        run.log("test_error", error_rate(model, x_test, y_test), step=epoch + 1)
    run.save_weights(model)
