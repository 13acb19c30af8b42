"""A committee's checkpoint format: its architecture as a payload, and the committee rebuilt from it.

The weights themselves go through :func:`autokd.checkpoint.save_checkpoint`; the payload
(``committee`` entry) names the members' families and knobs, the selector's size and the routing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint
from autokd.committee.modules import Cascade, RoutedPair, Selector
from autokd.errors import AutokdError
from autokd.models import build_model


def committee_payload(committee: nn.Module) -> dict[str, Any]:
    """The architecture of a committee (members, selector size, routing) for its checkpoint."""
    nets = [m[-1] if isinstance(m, nn.Sequential) else m for m in committee.members]
    payload: dict[str, Any] = {"members": [{"family": n.family, "knobs": dict(n.knobs)} for n in nets],
                               "threshold": float(committee.threshold)}
    if isinstance(committee, Cascade):
        payload.update(kind="cascade", rule=committee.rule, combine=committee.combine)
    else:
        selector = committee.selector[-1] if isinstance(committee.selector, nn.Sequential) else committee.selector
        payload.update(kind="pair", selector=dict(selector.knobs))
    return payload


def load_committee(payload: dict[str, Any]) -> nn.Module:
    """Rebuild a committee from its (weights-only) checkpoint payload, in eval mode.

    Pair checkpoints written before cascades existed (a ``pair`` entry, ``students.*`` weights,
    argmax routing) load as a routed pair with threshold 0.5, which routes the same way.
    """
    shape = {"num_classes": int(payload["num_classes"]), "in_channels": int(payload["in_channels"]),
             "image_size": int(payload["image_size"])}
    mean, std = tuple(payload["mean"]), tuple(payload["std"])
    spec = payload.get("committee")
    state = dict(payload["state_dict"])
    if spec is None:  # an older pair checkpoint
        old = payload["pair"]
        spec = {"kind": "pair", "members": old["students"], "selector": old["selector"], "threshold": 0.5}
        state = {k.replace("students.", "members.", 1): v for k, v in state.items()}
        state["threshold"] = torch.tensor(0.5)
    members = [deployable(build_model(m["family"], **shape, **m["knobs"]), mean, std) for m in spec["members"]]
    if spec["kind"] == "cascade":
        committee: nn.Module = Cascade(members[0], members[1], rule=spec["rule"], combine=spec["combine"],
                                       threshold=spec["threshold"])
    else:
        sel = spec["selector"]
        selector = deployable(Selector(in_channels=shape["in_channels"], image_size=shape["image_size"],
                                       layers=sel["layers"], width=sel["width"], family=sel.get("family", "conv")),
                              mean, std)
        committee = RoutedPair(members[0], members[1], selector, threshold=spec["threshold"],
                               num_classes=shape["num_classes"])
    try:
        committee.load_state_dict(state)
    except RuntimeError as err:
        raise AutokdError(f"committee weights do not fit their architecture: {str(err).splitlines()[0][:160]}",
                          "re-create the checkpoint with this version of autokd") from None
    return committee.eval()



def load_member(path: Path, device: torch.device) -> nn.Module:
    """A reuse committee's member: a plain single student's checkpoint, deployable, in eval mode."""
    payload = load_checkpoint(path)
    if payload.get("compressed_module") is not None or payload.get("kind", "single") != "single":
        raise AutokdError(f"student {path} is compressed or a committee; a reuse committee takes plain students",
                          "reuse only uncompressed single trials")
    net = network_from_checkpoint(payload, source=f"student {path}")
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).to(device).eval()

