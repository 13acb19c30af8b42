"""Families from model libraries, by name: ``timm/NAME`` and ``torchvision/NAME``.

:func:`zoo_family` turns such a name into a :class:`~autokd.models.registry.Family` the registry
builds like any other. Its knobs are the model constructor's numeric and boolean keyword arguments,
with the values the library's entry point gives them as defaults (timm's ``resnet10t`` sets
``stem_width=32`` over the class's 64); arguments the entry point fixes itself are not knobs. The
name and every knob are checked before anything is built, with the closest names on a typo.

Nothing is downloaded: timm models are created with ``pretrained=False``, torchvision ones with
``weights=None``; weights come from a file (:mod:`autokd.models.weights`). One-channel images:
timm's ``in_chans`` adapts the stem; a torchvision model's first 3-channel convolution is rebuilt
for one channel. Every build first runs the network on the ``meta`` device (no memory, no compute):
an image size it cannot take is one line naming the smallest it can, and the forward pass names the
FitNets hint layer (the middle block of those whose output is (N, C, H, W)) and the last block.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable

import torch
from torch import nn

from autokd.errors import AutokdError
from autokd.rules import Rule

#: Library prefixes; a family name ``PREFIX/NAME`` is resolved here.
PREFIXES = ("timm/", "torchvision/")
#: Constructor arguments the data or autokd decide, never knobs.
_SHAPE_ARGS = {"num_classes", "in_chans", "in_channels", "img_size", "pretrained", "progress", "weights",
               "aux_logits", "transform_input", "init_weights"}
#: Sizes tried, smallest first, when a model cannot take the data's image size.
_SIZES = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 299, 320, 384, 448, 512)


def is_zoo_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES)


def closest(word: str, names: list[str], n: int = 3) -> list[str]:
    """The names most like ``word`` (difflib), best first."""
    return difflib.get_close_matches(word, names, n=n, cutoff=0.5)


def _library(prefix: str) -> tuple[Callable[[], list[str]], Callable[..., nn.Module]]:
    """The library's model names and ``create(name, num_classes, in_channels, image_size, **kwargs)``."""
    if prefix == "timm/":
        import timm

        def create(name: str, *, num_classes: int, in_channels: int, image_size: int | None, **kwargs) -> nn.Module:
            if image_size is not None:
                kwargs["img_size"] = image_size
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)

        return timm.list_models, create
    import torchvision.models as tvm

    def create_tv(name: str, *, num_classes: int, in_channels: int, image_size: int | None, **kwargs) -> nn.Module:
        model = tvm.get_model_builder(name)(weights=None, num_classes=num_classes, **kwargs)
        return one_channel_stem(model) if in_channels == 1 else model

    return lambda: tvm.list_models(module=tvm), create_tv


def one_channel_stem(model: nn.Module) -> nn.Module:
    """The model with its first 3-channel convolution taking 1 channel (as timm's ``in_chans=1``)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            conv = nn.Conv2d(1, module.out_channels, module.kernel_size, module.stride, module.padding,
                             module.dilation, module.groups, module.bias is not None, module.padding_mode,
                             device=module.weight.device)
            setattr(parent, name.rpartition(".")[2], conv)
            return model
    return model


@functools.lru_cache(maxsize=None)
def zoo_family(name: str):
    """The :class:`Family` of ``timm/NAME`` or ``torchvision/NAME`` (cached per process).

    Example:
        >>> fam = zoo_family("torchvision/mobilenet_v2")
        >>> fam.knobs["width_mult"], str(fam.rules["width_mult"])
        (1.0, 'a number > 0')
    """
    from autokd.models.registry import Family

    prefix, _, model = name.partition("/")
    prefix += "/"
    names, create = _library(prefix)
    known = names()
    if model not in known:
        near = closest(model, known)
        raise AutokdError(f"unknown model family {name!r}" + (f" (closest: {', '.join(prefix + n for n in near)})"
                                                              if near else ""),
                          f"use a {prefix[:-1]} model name (python -c 'import {prefix[:-1]}; "
                          f"print({'timm.list_models()' if prefix == 'timm/' else 'torchvision.models.list_models()'})')")
    args = _constructor_args(create, model)
    takes_size = "img_size" in args
    knobs = _knobs(create, model, args, takes_size)
    rules = {key: _rule(key, value) for key, value in knobs.items()}

    def builder(*, num_classes: int, in_channels: int, image_size: int, **values: Any) -> nn.Module:
        def twin(size: int) -> nn.Module | Exception:  # the model on the meta device: no memory, no compute
            try:
                with torch.device("meta"):
                    return create(model, num_classes=num_classes, in_channels=in_channels,
                                  image_size=size if takes_size else None, **values)
            except Exception as err:  # the library's own check of a value (an assert, a TypeError)
                return err

        first = twin(image_size)
        if isinstance(first, Exception) and (not takes_size or isinstance(twin(224), Exception)):
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items() if v != knobs.get(k)) or "its defaults"
            raise AutokdError(f"{name} cannot be built with {shown}: {type(first).__name__}: "
                              f"{(str(first).strip().splitlines() or [''])[0][:160]}",
                              f"choose other values for these knobs of {name}")
        blocks = None if isinstance(first, Exception) else _blocks(first, in_channels, image_size)
        if blocks is None:
            def fits(size: int) -> bool:
                net = twin(size) if takes_size else first
                return not isinstance(net, Exception) and _blocks(net, in_channels, size) is not None

            smallest = next((size for size in _SIZES if size > image_size and fits(size)), None)
            at_least = f"images of at least {smallest}x{smallest} px" if smallest else "larger images"
            raise AutokdError(f"{name} cannot take {image_size}x{image_size} px images",
                              f"use another family, or {at_least} (study key image_size)")
        net = create(model, num_classes=num_classes, in_channels=in_channels,
                     image_size=image_size if takes_size else None, **values)
        net.zoo_blocks = blocks
        return net

    return Family(name, builder, knobs, f"{prefix[:-1]} model {model}", rules, hint_layer=hint_layer,
                  last_blocks=last_blocks, zoo=True)


def _constructor_args(create: Callable[..., nn.Module], model: str) -> dict[str, Any]:
    """The model class's constructor arguments as the library's entry point calls it (defaults filled in).

    The entry point is run on the ``meta`` device with the class's ``__init__`` watched; the first
    call is the model's own (inner modules of the same class come later).
    """
    with torch.device("meta"):
        cls = type(create(model, num_classes=10, in_channels=3, image_size=None))
    seen: dict[str, Any] = {}
    original = cls.__dict__.get("__init__")
    init = cls.__init__

    def watched(self, *args, **kw):
        if not seen:
            bound = inspect.signature(init).bind(self, *args, **kw)
            bound.apply_defaults()
            seen.update((k, v) for k, v in bound.arguments.items() if k != "self")
        init(self, *args, **kw)

    cls.__init__ = watched
    try:
        with torch.device("meta"):
            create(model, num_classes=10, in_channels=3, image_size=None)
    finally:
        if original is None:
            del cls.__init__
        else:
            cls.__init__ = original
    return seen


def _knobs(create: Callable[..., nn.Module], model: str, args: dict[str, Any], takes_size: bool) -> dict[str, Any]:
    """Numeric and boolean constructor ``args`` the entry point lets a caller set, with its values."""
    knobs = {k: v for k, v in args.items()
             if k not in _SHAPE_ARGS and type(v) in (int, float, bool)}
    while knobs:  # an argument the entry point passes itself fails as a "multiple values" TypeError
        try:
            with torch.device("meta"):
                create(model, num_classes=10, in_channels=3, image_size=224 if takes_size else None, **knobs)
            break
        except TypeError as err:
            fixed = [k for k in knobs if f"'{k}'" in str(err)]
            if not fixed:
                raise
            knobs.pop(fixed[0])
    return dict(sorted(knobs.items()))


def _rule(name: str, default: Any) -> Rule:
    if isinstance(default, bool):
        return Rule.one_of(False, True)
    if isinstance(default, int):
        return Rule.integer(at_least=0 if default == 0 else 1)
    if any(word in name for word in ("rate", "prob", "dropout")):
        return Rule.number(at_least=0, below=1)
    return Rule.number(at_least=0) if default == 0 else Rule.number(above=0)


def _blocks(twin: nn.Module, in_channels: int, image_size: int) -> tuple[list[str], list[str]] | None:
    """(blocks whose output is (N, C, H, W), modules with weights after the last of them), by name in
    forward order, from a forward pass of the meta twin; None when it cannot take the size.

    Blocks are the model's top-level children, a container of blocks (``features``, ``blocks``,
    ``layer1``) opened into them; a stem's layers stay one block.
    """
    parts = []
    for name, child in twin.named_children():
        inner = [(f"{name}.{n}", c) for n, c in child.named_children() if any(True for _ in c.parameters())]
        opened = (isinstance(child, (nn.Sequential, nn.ModuleList)) and len(inner) > 1
                  and all(any(True for _ in c.children()) for _, c in inner))  # blocks, not a stem's layers
        parts += inner if opened else [(name, child)] if any(True for _ in child.parameters()) else []
    order: list[tuple[str, int]] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: order.append(
        (name, o.dim() if isinstance(o, torch.Tensor) else 0))) for name, module in parts]
    try:
        with torch.no_grad():
            twin.eval()(torch.empty(2, in_channels, image_size, image_size, device="meta"))
    except Exception:  # a kernel larger than its input, a fixed position embedding
        return None
    finally:
        for hook in hooks:
            hook.remove()
    called = list(dict.fromkeys(name for name, _ in order))
    maps = [name for name, dim in dict(order).items() if dim == 4]
    maps.sort(key=called.index)
    if not maps:
        return None
    return maps, [name for name in called[called.index(maps[-1]) + 1:]]


def hint_layer(net: nn.Module) -> nn.Module:
    """FitNets hint: the middle block of those whose output is a feature map."""
    maps = net.zoo_blocks[0]
    return net.get_submodule(maps[len(maps) // 2])


def last_blocks(net: nn.Module) -> list[nn.Module]:
    """The last block with a feature-map output and every module with weights after it (the head)."""
    maps, head = net.zoo_blocks
    return [net.get_submodule(name) for name in [maps[-1], *head]]
