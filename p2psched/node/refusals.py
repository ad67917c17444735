"""The refusals a command of the node's façade can meet, each a `Refusal` whose message says
why and what to do; the API maps each kind onto a status."""

from __future__ import annotations


class Refusal(Exception):
    """The node will not do what was asked; the message says why, to whoever asked."""


class NotFound(Refusal):
    """No such job, task or role on this node, or no worker in the network for it."""


class Invalid(Refusal):
    """The request is wrong in itself: a job spec, a need, a task state, a page's bounds."""


class Unavailable(Refusal):
    """This node cannot do that: it is not a worker, or it keeps no store."""


class UnknownChoice(Refusal):
    """Not one of the scheduling strategies or predictor modes there are, or a bad table."""


class OverPriceCap(Refusal):
    """Workers serve the model, but none within the price a task for it may pay (its
    [models.NAME] max_price, else [server] max_price)."""
