"""parse_config: decoded document -> validated Config, or ConfigError with every problem."""
from __future__ import annotations

from .build import build_config
from .errors import ConfigError
from .model import Config
from .validate import validate_document


def parse_config(data: object) -> Config:
    doc, errors = validate_document(data)
    if errors or doc is None:
        raise ConfigError(errors)
    return build_config(doc)
