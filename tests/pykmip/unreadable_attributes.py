#!/usr/bin/env python3
"""Which attributes the real PyKMIP 0.11 client cannot read in a response; prints JSON.

usage: unreadable_attributes.py NAME...   (KMIP attribute names, e.g. "Random Number Generator")

For each name: {"1.x": true|false, "2.0": true|false}, whether PyKMIP's own decoding path
for a Get Attributes response accepts the attribute. 1.x (objects.Attribute.read): the name is
looked up in AttributeType and AttributeValueFactory.create_attribute_value must give a value
type. 2.0 (objects.Attributes.read): the tag must be one enums.is_attribute accepts for 2.0 and
create_attribute_value_by_enum must give a value type. Either failure fails the whole answer.
"""

import json
import sys

from kmip.core import enums
from kmip.core.factories.attribute_values import AttributeValueFactory

FACTORY = AttributeValueFactory()


def enum_name(name):
    return name.replace(".", "_").replace(" ", "_").replace("#", "").upper()


def readable_1x(name):
    try:
        kind = enums.AttributeType[enum_name(name)]
    except KeyError:
        kind = name  # PyKMIP's custom attribute path
    try:
        return FACTORY.create_attribute_value(kind, None) is not None
    except Exception:  # noqa: BLE001 - NotImplementedError, ValueError: unreadable
        return False


def readable_2_0(name):
    try:
        tag = enums.Tags[enum_name(name)]
    except KeyError:
        return False
    if not enums.is_attribute(tag, kmip_version=enums.KMIPVersion.KMIP_2_0):
        return False
    try:
        FACTORY.create_attribute_value_by_enum(tag, None)
        return True
    except Exception:  # noqa: BLE001
        return False


def main():
    print(json.dumps({n: {"1.x": readable_1x(n), "2.0": readable_2_0(n)} for n in sys.argv[1:]}))


if __name__ == "__main__":
    main()
