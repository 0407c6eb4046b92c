#!/usr/bin/env python3
"""Reads a key's attributes with the real PyKMIP 0.11 client; prints one JSON object.

usage: attributes_flow.py HOST PORT PKI_DIR VERSION(1.2|1.4|2.0)

As tenant-a: creates an AES-256 key (with a name), activates it, then asks for its
attributes without naming any (Get Attributes with no names: the server chooses), for the
list of its attribute names (Get Attribute List), and for two attributes by name. Every
step's outcome is recorded: {"ok": true, "value": ...} or {"ok": false, "error": ..., "reason": ...}.
Attribute values are written as text: enumerations by name, numbers and booleans as such,
anything else by its str().
"""

import enum
import json
import sys
import uuid

from kmip.core import enums

from dev_flow import name_attr, session, step


def plain(value):
    """An attribute value PyKMIP decoded, as something JSON can hold."""
    inner = getattr(value, "value", value)
    if isinstance(inner, enum.Enum):
        return inner.name
    if isinstance(inner, (bool, int, float, str)) or inner is None:
        return inner
    return str(inner)


def attribute_map(attributes):
    """{attribute name: [values]} of the Attribute objects PyKMIP returns."""
    out = {}
    for a in attributes:
        name = a.attribute_name.value
        out.setdefault(name, []).append(plain(a.attribute_value))
    return out


def main():
    host, port, pki, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    name = "attributes-%s-%s" % (version, uuid.uuid4().hex[:8])

    def flow(c):
        out = {}
        out["create"] = step(lambda: c.create(
            enums.CryptographicAlgorithm.AES, 256, name=name,
            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                      enums.CryptographicUsageMask.DECRYPT]))
        if not out["create"]["ok"]:
            return out
        uid = out["create"]["value"]
        out["activate"] = step(lambda: c.activate(uid))
        out["get_attributes_all"] = step(lambda: attribute_map(c.get_attributes(uid)[1]))
        out["get_attribute_list"] = step(lambda: sorted(c.get_attribute_list(uid)))
        out["get_attributes_named"] = step(lambda: attribute_map(c.get_attributes(
            uid, ["Cryptographic Algorithm", "State"])[1]))
        out["locate"] = step(lambda: c.locate(attributes=[name_attr(name)]))
        out["uid"] = {"ok": True, "value": uid}
        return out

    result = session(host, port, pki, "tenant-a", version, flow)
    result["version"] = version
    print(json.dumps(result))


if __name__ == "__main__":
    main()
