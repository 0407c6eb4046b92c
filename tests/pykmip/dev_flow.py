#!/usr/bin/env python3
"""Drives `openkcm dev` with the real PyKMIP 0.11 client; prints one JSON object.

usage: dev_flow.py HOST PORT PKI_DIR VERSION(1.2|1.4|2.0) [get UID | keep]

The default flow: tenant-a creates an AES-256 key (Encrypt|Decrypt, a name), gets it,
activates it, encrypts and decrypts (AES-CBC, PKCS5, explicit IV), locates it by name;
tenant-b tries to locate/get/activate/destroy it; stranger tries every operation;
tenant-a revokes and destroys it. `keep` only creates a key as tenant-a and `get UID` only
fetches UID as tenant-a (the restart test).
Every step's outcome is recorded: {"ok": true, ...} or {"ok": false, "error": ..., "reason": ...}.
"""

import json
import os
import sys
import uuid

from kmip.core import enums
from kmip.core.factories import attributes as attribute_factory
from kmip.pie.client import ProxyKmipClient

VERSIONS = {
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}
PARAMS = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
}


def client(host, port, pki, who, version):
    # The constructor arguments `openkcm dev` prints. ssl_version stays PyKMIP's default
    # (PROTOCOL_SSLv23, i.e. negotiate: TLS 1.3 with the gateway); config_file points at
    # no file so that no ~/.pykmip/pykmip.conf or /etc/pykmip/pykmip.conf interferes.
    return ProxyKmipClient(
        hostname=host,
        port=port,
        cert=os.path.join(pki, who + ".pem"),
        key=os.path.join(pki, who + "-key.pem"),
        ca=os.path.join(pki, "ca.pem"),
        config="client",
        config_file=None,
        kmip_version=VERSIONS[version],
    )


def step(fn):
    try:
        value = fn()
        return {"ok": True, "value": value}
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        reason = getattr(e, "reason", None)
        return {
            "ok": False,
            "error": type(e).__name__ + ": " + str(e),
            "reason": reason.name if hasattr(reason, "name") else (None if reason is None else str(reason)),
        }


def session(host, port, pki, who, version, actions):
    """Runs `actions(c)` on an open connection; a failing open is recorded as such."""
    c = client(host, port, pki, who, version)
    opened = step(lambda: c.open())
    if not opened["ok"]:
        return {"open": opened}
    try:
        out = actions(c)
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    out["open"] = opened
    return out


def name_attr(name):
    return attribute_factory.AttributeFactory().create_attribute(enums.AttributeType.NAME, name)


def main():
    host, port, pki, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if len(sys.argv) > 6 and sys.argv[5] == "get":
        uid = sys.argv[6]

        def get_only(c):
            return {"get": step(lambda: len(c.get(uid).value))}

        print(json.dumps(session(host, port, pki, "tenant-a", version, get_only)))
        return

    if len(sys.argv) > 5 and sys.argv[5] == "keep":

        def create_only(c):
            return {"create": step(lambda: c.create(enums.CryptographicAlgorithm.AES, 256))}

        print(json.dumps(session(host, port, pki, "tenant-a", version, create_only)))
        return

    name = "dev-flow-%s-%s" % (version, uuid.uuid4().hex[:8])
    result = {"version": version, "name": name}
    plaintext = b"openkcm dev: hello from PyKMIP"
    iv = os.urandom(16)
    state = {}

    def tenant_a_setup(c):
        out = {}
        out["create"] = step(lambda: c.create(
            enums.CryptographicAlgorithm.AES, 256, name=name,
            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                      enums.CryptographicUsageMask.DECRYPT]))
        if not out["create"]["ok"]:
            return out
        uid = out["create"]["value"]
        state["uid"] = uid
        out["get"] = step(lambda: len(c.get(uid).value))
        out["activate"] = step(lambda: c.activate(uid))

        def encrypt():
            ciphertext, _ = c.encrypt(plaintext, uid=uid, cryptographic_parameters=PARAMS,
                                      iv_counter_nonce=iv)
            state["ciphertext"] = ciphertext
            return len(ciphertext)

        out["encrypt"] = step(encrypt)
        out["decrypt"] = step(lambda: c.decrypt(
            state["ciphertext"], uid=uid, cryptographic_parameters=PARAMS,
            iv_counter_nonce=iv) == plaintext)
        out["locate"] = step(lambda: c.locate(attributes=[name_attr(name)]))
        return out

    result["tenant_a"] = session(host, port, pki, "tenant-a", version, tenant_a_setup)
    uid = state.get("uid")
    result["uid"] = uid
    if uid is None:
        print(json.dumps(result))
        return

    def tenant_b(c):
        return {
            "locate": step(lambda: c.locate(attributes=[name_attr(name)])),
            "get": step(lambda: len(c.get(uid).value)),
            "activate": step(lambda: c.activate(uid)),
            "destroy": step(lambda: c.destroy(uid)),
        }

    result["tenant_b"] = session(host, port, pki, "tenant-b", version, tenant_b)

    def stranger(c):
        return {
            "create": step(lambda: c.create(enums.CryptographicAlgorithm.AES, 256)),
            "get": step(lambda: len(c.get(uid).value)),
            "locate": step(lambda: c.locate(attributes=[name_attr(name)])),
            "destroy": step(lambda: c.destroy(uid)),
        }

    result["stranger"] = session(host, port, pki, "stranger", version, stranger)

    def tenant_a_teardown(c):
        return {
            "revoke": step(lambda: c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)),
            "destroy": step(lambda: c.destroy(uid)),
            "get_after_destroy": step(lambda: len(c.get(uid).value)),
        }

    result["tenant_a_end"] = session(host, port, pki, "tenant-a", version, tenant_a_teardown)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
