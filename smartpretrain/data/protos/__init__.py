"""Our own proto2 schemas, loaded into a private descriptor pool (no generated ``*_pb2`` modules).

``womd_scenario.proto`` is the subset of the Waymo Open Motion Dataset ``Scenario`` message that the WOMD
converter reads; ``womd_submission.proto`` is the motion challenge's submission file (``MotionChallengeSubmission``
and its parts, same package, field numbers checked against Waymo's public ``motion_submission.proto``). Their
serialized descriptors are embedded in :mod:`.womd_scenario_descriptor` and :mod:`.womd_submission_descriptor`
(regenerate both with ``scripts/gen_womd_schema.py``) and share one pool, so :func:`womd_message` finds either.
The message classes are built with ``protobuf``'s message factory, so any protobuf runtime >= 4.25 works, and a
private pool never collides with an installed ``waymo-open-dataset``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from smartpretrain.data.protos.womd_scenario_descriptor import SERIALIZED as _WOMD_SERIALIZED
from smartpretrain.data.protos.womd_submission_descriptor import SERIALIZED as _WOMD_SUBMISSION_SERIALIZED

WOMD_PACKAGE = "waymo.open_dataset"


@cache
def _womd_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_WOMD_SERIALIZED)
    pool.AddSerializedFile(_WOMD_SUBMISSION_SERIALIZED)  # no message name in common with the scenario schema
    return pool


def womd_message(name: str) -> type[Message]:
    """The message class ``waymo.open_dataset.<name>`` of our WOMD schemas (e.g. ``"Scenario"``,
    ``"MotionChallengeSubmission"``)."""
    descriptor = _womd_pool().FindMessageTypeByName(f"{WOMD_PACKAGE}.{name}")
    get_class: Any = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(_womd_pool()).GetPrototype(descriptor)  # protobuf < 4.22


__all__ = ["WOMD_PACKAGE", "womd_message"]
