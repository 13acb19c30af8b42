"""Committee trials: two students that answer together, as a cascade or a routed pair (docs/pairs.md).

A committee trial (``TrialConfig.kind`` ``cascade`` or ``pair``) runs these stages:

1. **Members.** Two students, distilled for the committee exactly as single students are
   (:func:`autokd.trial.distill_student`), or, for a *reuse* committee, loaded from two
   finished single trials of the study (only the routing is fitted). The member with fewer
   MACs is the *cheap* one, the other the *large* one.
2. **Routing, learned on the validation split**, which the members never trained on
   (:mod:`autokd.routing`). Training images are useless for it: members nearly memorise them,
   so both are right almost everywhere and whom to trust does not transfer to new inputs.

   - cascade: run the cheap member; when its doubt (``1 - max softmax`` or ``1 - margin``,
     ``rule``) exceeds a threshold, defer to the large member (``combine: larger``) or to the
     average of both members' probabilities (``combine: average``);
   - routed pair: a selector CNN (``layers``, ``width``) predicts from the image whether the
     large member is needed, trained on augmented views of the validation images with a
     cost-aware target (:func:`autokd.routing.selector_targets`: the cheap member whenever it
     is right); inputs go to the large member when that probability exceeds a threshold.

   The threshold minimises expected MACs at the large member's accuracy minus ``tolerance``
   points (``target: match``) or maximises accuracy deferring at most ``budget`` of the inputs
   (``target: budget``). Validation figures are **out of fold**: each of ``folds`` parts of the
   validation split is routed by a rule fitted on the other parts; the deployed rule is then
   fitted on all of it. The test split is routed once, by the deployed rule, for the report.
3. **Costs as the committee runs.** ``macs``: expected MACs per input over the validation split
   (selector, cheap member on the inputs it keeps or on all of them for a cascade, the large
   member on deferred inputs); ``latency_ms``: the deployed committee timed at batch 1 on a
   stream of validation inputs with the validation routing share, early exit included;
   ``params`` / ``size_bytes``: everything that ships.

The deployed model (:class:`Cascade`, :class:`RoutedPair`) takes [0, 1] images and returns
log-probabilities; ``forward_with_route`` also returns whether each input was deferred. Both
run each member only on the rows routed to it, and export as such to ONNX and TorchScript.

The package, by job: :mod:`~autokd.committee.spec` (settings, defaults filled in),
:mod:`~autokd.committee.modules` (the deployed committees and the selector),
:mod:`~autokd.committee.checkpoint` (the checkpoint payload and loading),
:mod:`~autokd.committee.fit` (fitting the routing on validation) and
:mod:`~autokd.committee.trial` (the committee of two trained members and its measurement); the
committee trial's stages run in order in :func:`autokd.trial.committee_trial`.

"""

from autokd.committee.checkpoint import committee_payload, load_committee, load_member
from autokd.committee.fit import (Routing, fit_cascade, fit_routed_pair, selector_loss, selector_scores,
                                  train_selector)
from autokd.committee.modules import Cascade, RoutedPair, Selector, WithRoute, build_selector, committee_outputs
from autokd.committee.spec import SELECTOR_FAMILIES, RouterSpec, SelectorSpec
from autokd.committee.trial import (LATENCY_STREAM, committee_record, fit_committee, latency_stream,
                                    measure_committee, second_config)
from autokd.config import COMMITTEE_KINDS

__all__ = ["COMMITTEE_KINDS", "LATENCY_STREAM", "SELECTOR_FAMILIES", "Cascade", "RoutedPair", "RouterSpec", "Routing",
           "Selector", "SelectorSpec", "WithRoute", "build_selector", "committee_outputs", "committee_payload",
           "committee_record", "fit_cascade", "fit_committee", "fit_routed_pair", "latency_stream", "load_committee",
           "load_member", "measure_committee", "second_config", "selector_loss", "selector_scores", "train_selector"]
