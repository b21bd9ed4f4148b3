"""ftkit backend for OpenAI hosted fine-tuning, and a loopback emulator of the API.

``FineTuneJob.create(spec, backend="openai")`` trains on OpenAI (supervised or DPO);
``FineTuneJob.attach("ftjob-...", backend="openai")`` follows a job created elsewhere.
``python -m ftkit_openai.emulator`` serves the API on loopback for tests and dry runs.
"""

from ftkit_openai.backend import OpenAIBackend
from ftkit_openai.config import OpenAIConfig
from ftkit_openai.predictor import OpenAIPredictor

__all__ = ["OpenAIBackend", "OpenAIConfig", "OpenAIPredictor"]
