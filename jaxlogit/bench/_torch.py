"""The torchattacks side: the same attacks and baselines on the torch twin, work counted.

Only imported when torch and torchattacks are installed (the ``torch`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from jaxlogit import attacks
from jaxlogit.bench import _attacks
from jaxlogit.bench._attacks import Work
from jaxlogit.bench._model import to_nchw, torch_device
from jaxlogit.errors import JaxlogitError


class WorkCounter:
    """Counts the images a torch model sees forward and the input gradients through it.

    A forward hook counts every image of every call; a hook on the output counts the images
    of every backward pass that reaches it (torchattacks' DeepFool runs one per class).
    """

    def __init__(self, model: Any):
        self.forward_images = 0
        self.gradient_images = 0
        self._handle = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module, inputs, output) -> None:
        images = int(output.shape[0])
        self.forward_images += images
        if output.requires_grad:
            output.register_hook(lambda grad: self._on_backward(images))

    def _on_backward(self, images: int) -> None:
        self.gradient_images += images

    def reset(self) -> None:
        """Starts counting from zero."""
        self.forward_images = self.gradient_images = 0

    def work(self, batch: int) -> Work:
        """The counted passes, in units of passes over ``batch`` images."""
        return Work(forwards=self.forward_images / batch, gradients=self.gradient_images / batch)

    def close(self) -> None:
        """Removes the hook."""
        self._handle.remove()


def torchattacks_attack(name: str, model: Any) -> Any:
    """torchattacks' counterpart of jaxlogit's ``name`` attack, with the same settings
    (``AttackSpec.torch``; an attack without one is an error)."""
    counterpart = attacks.get(name).torch
    if counterpart is None:
        raise JaxlogitError(f"attack {name!r} has no torchattacks counterpart: time it with --no-torch")
    return counterpart.build(model, eps=_attacks.EPS)


def attack_call(name: str, model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], Any]:
    """A no-argument function running torchattacks' ``name`` on NHWC ``x`` and labels ``y``."""
    attack = torchattacks_attack(name, model)
    images, labels = to_nchw(x), _labels(y)
    return synchronised(lambda: attack(images, labels))


def _labels(y: np.ndarray) -> Any:
    return torch.from_numpy(np.asarray(y, np.int64)).to(torch_device())


def synchronised(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` that returns only once the GPU has finished its work (timings); as is on CPU."""
    if torch_device().type != "cuda":
        return call

    def run():
        result = call()
        torch.cuda.synchronize()
        return result

    return run


def success_rate(model: Any, x_adv: Any, y: np.ndarray) -> float:
    """Fraction of NCHW adversarial images ``x_adv`` the model does not label ``y``."""
    with torch.no_grad():
        predicted = model(x_adv).argmax(1).cpu().numpy()
    return float(np.mean(predicted != np.asarray(y)))


def baseline_calls(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], Any]]:
    """``{"forward": ..., "gradient": ...}``: one forward (no autograd) and one
    forward + cross-entropy input gradient of the batch, as torch users write them."""
    images, labels = to_nchw(x), _labels(y)

    def forward():
        with torch.no_grad():
            return model(images)

    def gradient():
        leaf = images.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(leaf), labels)
        return torch.autograd.grad(loss, leaf)[0]

    return {"forward": synchronised(forward), "gradient": synchronised(gradient)}


def threads() -> int:
    """torch's intra-op thread count."""
    return torch.get_num_threads()
