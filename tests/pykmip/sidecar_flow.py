#!/usr/bin/env python3
"""The real PyKMIP 0.11 client through `openkcm sidecar`'s local TLS port; prints one JSON
object. It trusts the pod-local CA and presents the pod-local client pair, as a workload
configured from the sidecar's shared volume does.

usage: sidecar_flow.py HOST PORT LOCAL_DIR VERSION(1.2|1.4|2.0)
"""

import json
import os
import sys
import uuid

from kmip.core import enums
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


def main():
    host, port, local, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    client = ProxyKmipClient(
        hostname=host,
        port=port,
        cert=os.path.join(local, "client.pem"),
        key=os.path.join(local, "client-key.pem"),
        ca=os.path.join(local, "ca.pem"),
        config="client",
        config_file=None,
        kmip_version=VERSIONS[version],
    )
    name = "sidecar-pykmip-" + uuid.uuid4().hex
    out = {}
    with client:
        uid = client.create(
            enums.CryptographicAlgorithm.AES,
            256,
            name=name,
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT,
                enums.CryptographicUsageMask.DECRYPT,
            ],
        )
        out["uid"] = uid
        out["key_len"] = len(client.get(uid).value)
        client.activate(uid)
        iv = b"\x07" * 16
        ciphertext, _ = client.encrypt(b"through the sidecar", uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv)
        out["decrypted"] = client.decrypt(ciphertext, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv).decode()
        out["located"] = client.locate(attributes=[
            client.attribute_factory.create_attribute(enums.AttributeType.NAME, name)
        ])
        client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        client.destroy(uid)
        out["destroyed"] = True
    print(json.dumps(out))


if __name__ == "__main__":
    main()
