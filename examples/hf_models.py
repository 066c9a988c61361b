"""Hugging Face `transformers` vision models as convbench model factories: random weights, built from
their configs, so nothing is downloaded. An optional extra: `pip install -e ".[networks]"`.

    PYTHONPATH=examples python -m harness.capture hf_models:resnet50 --input 1,3,224,224
    PYTHONPATH=examples python -m harness.network hf_models:resnet50 --input 1,3,224,224 impl=unfold,fft,cudnn

The defaults of ResNetConfig, ConvNextConfig and MobileViTConfig are ResNet-50, ConvNeXt-T and
MobileViT-S; keyword arguments go to the config (e.g. num_labels=10)."""
from __future__ import annotations


def resnet50(**config):
    """ResNet-50 v1.5 (bottleneck blocks 3-4-6-3), as microsoft/resnet-50."""
    from transformers import ResNetConfig, ResNetForImageClassification
    return ResNetForImageClassification(ResNetConfig(**config))


def convnext_tiny(**config):
    """ConvNeXt-T (depths 3-3-9-3, widths 96-768): 7x7 depthwise convolutions."""
    from transformers import ConvNextConfig, ConvNextForImageClassification
    return ConvNextForImageClassification(ConvNextConfig(**config))


def mobilevit_small(**config):
    """MobileViT-S: inverted residuals (depthwise 3x3) with transformer blocks between convolutions."""
    from transformers import MobileViTConfig, MobileViTForImageClassification
    return MobileViTForImageClassification(MobileViTConfig(**config))
