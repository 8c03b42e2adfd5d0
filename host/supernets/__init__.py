"""Registry of gated supernets: named configs, built by name (like timm's model registry).

    net = build_supernet("resnet18")                  # standard full-size shape, 224x224x3, 1000 classes
    net = build_supernet("resnet_tiny", num_classes=4) # overrides replace config fields

Full-size shapes (latency work): resnet18, resnet34, resnet50, mobilenetv2, vit_s16.
Small shapes (tests, CPU training): resnet_numvqa, resnet_tiny, bottleneck_tiny, mobilenetv2_tiny, vit_tiny.
Detection (gated CenterNet): centernet_attrod (AttrOD), centernet_tiny (tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from host.errors import ConfigError, suggest
from host.supernets.base import Supernet
from host.supernets.centernet import CenterNet, CenterNetConfig
from host.supernets.mobilenetv2 import MobileNetV2, MobileNetV2Config
from host.supernets.resnet import ResNet, ResNetConfig
from host.supernets.vit import ViT, ViTConfig

BACKBONES: dict[str, tuple[type[Supernet], type]] = {
    "resnet": (ResNet, ResNetConfig),
    "mobilenetv2": (MobileNetV2, MobileNetV2Config),
    "vit": (ViT, ViTConfig),
    "centernet": (CenterNet, CenterNetConfig),
}

_TINY_MBV2 = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 1, 2))

CONFIGS: dict[str, tuple[str, Any]] = {
    # standard full-size shapes
    "resnet18": ("resnet", ResNetConfig("basic", (2, 2, 2, 2), (64, 128, 256, 512))),
    "resnet34": ("resnet", ResNetConfig("basic", (3, 4, 6, 3), (64, 128, 256, 512))),
    "resnet50": ("resnet", ResNetConfig("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512))),
    "mobilenetv2": ("mobilenetv2", MobileNetV2Config()),
    "vit_s16": ("vit", ViTConfig(patch_size=16, dim=384, depth=12, heads=6)),
    # small shapes
    "resnet_numvqa": ("resnet", ResNetConfig(
        "basic", (2, 2, 2, 2), (16, 32, 64, 128), stem="small", stem_width=16,
        in_chans=1, num_classes=2, image_size=56, head_hidden=128)),
    "resnet_tiny": ("resnet", ResNetConfig(
        "basic", (1, 1, 1, 1), (8, 16, 32, 64), stem="small", stem_width=8, num_classes=10, image_size=32)),
    "bottleneck_tiny": ("resnet", ResNetConfig(
        "bottleneck", (1, 2, 1, 1), (4, 8, 16, 16), stem="small", stem_width=8, num_classes=10, image_size=32)),
    "mobilenetv2_tiny": ("mobilenetv2", MobileNetV2Config(
        settings=_TINY_MBV2, stem_width=16, stem_stride=1, last_channel=128, num_classes=10, image_size=32)),
    "vit_tiny": ("vit", ViTConfig(patch_size=8, dim=32, depth=2, heads=2, mlp_ratio=2.0, num_classes=10,
                                  image_size=32)),
    # detection (AttrOD): gated ResNet + FPN-lite neck + CenterNet heads, 64x64 RGB scenes, 4 categories
    "centernet_attrod": ("centernet", CenterNetConfig(
        "basic", (1, 1, 2, 2), (16, 32, 64, 128), stem_width=16, image_size=64, num_classes=4,
        neck_width=48, head_width=48)),
    "centernet_tiny": ("centernet", CenterNetConfig(
        "basic", (1, 1, 1, 1), (8, 16, 16, 32), stem_width=8, image_size=32, num_classes=4,
        neck_width=16, head_width=16)),
}


def list_configs() -> list[str]:
    return list(CONFIGS)


def get_config(name: str, **overrides: Any) -> tuple[str, Any]:
    """(backbone, config dataclass) for a registered name, with field overrides applied."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown supernet config {name!r}; known: {', '.join(CONFIGS)}." + suggest(name, CONFIGS))
    backbone, cfg = CONFIGS[name]
    if overrides:
        fields = {f.name for f in dataclasses.fields(cfg)}
        unknown = set(overrides) - fields
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)} for {name!r}; valid: {sorted(fields)}")
        cfg = dataclasses.replace(cfg, **overrides)
    return backbone, cfg


def build_supernet(name: str, **overrides: Any) -> Supernet:
    """Build the gated supernet registered as ``name`` (random init)."""
    backbone, cfg = get_config(name, **overrides)
    cls, _ = BACKBONES[backbone]
    return cls(cfg, config_name=name)


def config_from_dict(backbone: str, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from its JSON form (tuples restored)."""
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}." + suggest(backbone, BACKBONES))
    _, cfg_cls = BACKBONES[backbone]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(data) - fields
    if unknown:
        raise ConfigError(f"unknown {backbone} config field(s) {sorted(unknown)}")

    def _tuples(v: Any) -> Any:
        return tuple(_tuples(x) for x in v) if isinstance(v, list) else v

    return cfg_cls(**{k: _tuples(v) for k, v in data.items()})


def build_network(backbone: str, config: Any, config_name: str, widths: dict[str, int] | None = None) -> Supernet:
    """Build a network of a backbone family from a config object, optionally with reduced gated widths."""
    cls, _ = BACKBONES[backbone]
    return cls(config, config_name=config_name, widths=widths)


__all__ = [
    "BACKBONES", "CONFIGS", "Supernet", "build_network", "build_supernet", "config_from_dict", "get_config",
    "list_configs",
]
