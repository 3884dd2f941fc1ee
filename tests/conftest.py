"""Shared test set-up: quiet TensorFlow, and a fresh Keras state per test."""

from __future__ import annotations

import os

# Set before anything imports TensorFlow: no GPU probing noise, no oneDNN banner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

pytest_plugins = ["tests.fixtures"]
