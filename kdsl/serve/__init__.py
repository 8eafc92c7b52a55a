"""The HTTP API (FastAPI): predictions with explanations, the rules, health and Prometheus metrics."""

from kdsl.serve.app import create_app
from kdsl.serve.errors import ApiError
from kdsl.serve.limits import ServeLimits
from kdsl.serve.metrics import Metrics
from kdsl.serve.schemas import (
    DecisionOut,
    ErrorResponse,
    Health,
    PredictRequest,
    PredictResponse,
    RuleOut,
    RulesResponse,
    SampleIn,
    TurnIn,
)

__all__ = [
    "ApiError", "DecisionOut", "ErrorResponse", "Health", "Metrics", "PredictRequest", "PredictResponse",
    "RuleOut", "RulesResponse", "SampleIn", "ServeLimits", "TurnIn", "create_app",
]
