"""Pipeline specs: pydantic models, loading with file/line/field error messages."""

from hub.spec.loader import Pipeline, discover, load, loads
from hub.spec.models import PipelineSpec

__all__ = ["Pipeline", "PipelineSpec", "discover", "load", "loads"]
