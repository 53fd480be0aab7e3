"""The one generator definition (FFC-ResNet) shared by training, export and every engine."""

from .generator import CONFIGS, Generator, GeneratorConfig, build_generator, count_parameters, get_config

__all__ = ["CONFIGS", "Generator", "GeneratorConfig", "build_generator", "count_parameters", "get_config"]
