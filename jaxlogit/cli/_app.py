"""The root click group and options shared by several commands."""

from __future__ import annotations

import functools

import click

from jaxlogit import attacks, models
from jaxlogit.errors import JaxlogitError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jaxlogit")
def cli() -> None:
    """jaxlogit: defend adversarial attacks by correcting logits (arXiv 1906.10973), in JAX.

    The embedded default runs on Fashion-MNIST with no download; ImageNet models come from
    torchvision weights via `jaxlogit convert`.
    """


def common_options(fn):
    """Adds --data-dir and --cache-dir (also read from $JAXLOGIT_DATA / $JAXLOGIT_CACHE)."""

    @click.option("--data-dir", envvar="JAXLOGIT_DATA", default=None, type=click.Path(),
                  help="Dataset folder (default: $JAXLOGIT_DATA, then the system copy).")
    @click.option("--cache-dir", envvar="JAXLOGIT_CACHE", default=None, type=click.Path(),
                  help="Where trained models, logit stores and correctors are cached "
                       "(default: $JAXLOGIT_CACHE or ~/.cache/jaxlogit).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def check_arch(arch: str, *, compact_only: bool = False) -> str:
    """Returns ``arch`` if it names a backbone, else raises a one-line error listing them."""
    names = [n for n in models.names() if not compact_only or models.spec(n).input_shape[0] <= 64]
    if arch not in names:
        raise JaxlogitError(f"unknown arch {arch!r}: choose one of {', '.join(names)} (see `jaxlogit models`)")
    return arch


class AttackName(click.ParamType):
    """A registered attack's name (``jaxlogit.attacks``), read when parsing, so attacks registered
    after import are accepted too; an unknown name is a one-line usage error listing them.

    Args:
      extra: other accepted words (``all`` for ``jaxlogit bench``).
    """

    name = "attack"

    def __init__(self, *extra: str):
        self.extra = extra

    def choices(self) -> tuple[str, ...]:
        """The accepted names: the registered attacks, then ``extra``."""
        return (*attacks.names(), *self.extra)

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.choices())}]"

    def convert(self, value, param, ctx) -> str:
        if value in self.extra:
            return value
        try:
            return attacks.get(value).name
        except JaxlogitError as err:
            tail = f" or {' or '.join(self.extra)}" if self.extra else ""
            self.fail(f"{err}{tail}", param, ctx)
