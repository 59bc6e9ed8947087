"""Backbones: flax ports of torchvision's VGG-16(-BN), ResNet-50, DenseNet-121, compact
Fashion-MNIST variants of the same families, torchvision weight import, ``logits_fn`` and
checkpoints.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxlogit import models
    >>> spec = models.spec("resnet_compact")
    >>> module = models.create(spec.name)
    >>> variables = models.init(module, jax.random.key(0), spec.input_shape)
    >>> f = models.logits_fn(module, variables, mean=spec.mean, std=spec.std)
    >>> f(jnp.zeros((2, *spec.input_shape))).shape
    (2, 10)
"""

from jaxlogit.models._checkpoint import check_target as check_checkpoint_target
from jaxlogit.models._checkpoint import load_checkpoint, save_checkpoint
from jaxlogit.models._densenet import DenseNet
from jaxlogit.models._logits import logits_fn
from jaxlogit.models._registry import ModelSpec, create, init, names, spec
from jaxlogit.models._resnet import ResNet
from jaxlogit.models._torch_export import to_state_dict, to_torch
from jaxlogit.models._torch_import import from_torchvision
from jaxlogit.models._vgg import VGG

__all__ = [
    "DenseNet",
    "ModelSpec",
    "ResNet",
    "VGG",
    "check_checkpoint_target",
    "create",
    "from_torchvision",
    "init",
    "load_checkpoint",
    "logits_fn",
    "names",
    "save_checkpoint",
    "spec",
    "to_state_dict",
    "to_torch",
]
