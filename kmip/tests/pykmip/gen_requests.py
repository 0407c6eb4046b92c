#!/usr/bin/env python3
"""Capture the exact bytes the real PyKMIP 0.11 client sends, as test fixtures.

Each request is produced by calling PyKMIP's own client API
(``kmip.pie.client.ProxyKmipClient`` and, for the operations the Pie client
does not expose, its underlying ``kmip.services.kmip_client.KMIPProxy``).
The client is "opened" onto a recording transport: ``KMIPProxy._send_message``
encodes the request with PyKMIP's encoder and hands the buffer to
``self.protocol.write``, which records it and aborts the call (no server, no
socket, no TLS).  So every fixture is byte-for-byte what PyKMIP would put on
the wire.  responses.json adds replies from PyKMIP's own server engine
(KmipEngine, in-memory SQLite, clock and key generation patched to be fixed)
to a short create/get/activate/encrypt conversation.

Usage (with the repo venv made by scripts/bootstrap.sh):

    .venv/bin/python kmip/tests/pykmip/gen_requests.py           # rewrite fixtures
    .venv/bin/python kmip/tests/pykmip/gen_requests.py --stdout  # print requests.json
    .venv/bin/python kmip/tests/pykmip/gen_requests.py --stdout=responses  # or refused
    .venv/bin/python kmip/tests/pykmip/gen_requests.py --check   # diff against files
    .venv/bin/python kmip/tests/pykmip/gen_requests.py --dump get 2.0  # TTLV tree

Output is deterministic: fixed identifiers, dates, key bytes and IVs; PyKMIP
puts no time stamp into request headers.  Every ``expect`` value is what was
handed to the client (not read back from the encoding), so the Rust decoder is
checked against the caller's intent.  Enumerations appear as their KMIP integer
values; byte strings as lowercase hex.
"""

import json
import logging
import os
import sys
import warnings

# PyKMIP 0.11 trips deprecation warnings in SQLAlchemy and cryptography on
# import; they are noise for a fixture generator.
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)

import kmip  # noqa: E402
from kmip.core import enums  # noqa: E402
from kmip.core import objects as cobjects  # noqa: E402
from kmip.core.factories.attributes import AttributeFactory  # noqa: E402
from kmip.core.messages import contents  # noqa: E402
from kmip.pie import client as pie_client  # noqa: E402
from kmip.pie import objects as pobjects  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REQUESTS_JSON = os.path.join(HERE, "requests.json")
RESPONSES_JSON = os.path.join(HERE, "responses.json")
REFUSED_JSON = os.path.join(HERE, "refused.json")

PYKMIP_VERSION = "0.11.0"

VERSIONS = [
    ("1.2", enums.KMIPVersion.KMIP_1_2),
    ("1.4", enums.KMIPVersion.KMIP_1_4),
    ("2.0", enums.KMIPVersion.KMIP_2_0),
]

# Fixed inputs: nothing below depends on time, randomness or the host.
UID = "8d9f2a4e-3c1b-4f6a-9e2d-5b7c8a1f0e3d"
UID2 = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"
PUB_UID = "a0000000-0000-4000-8000-000000000001"
PRIV_UID = "a0000000-0000-4000-8000-000000000002"
KEY_NAME = "tenant-a/orders-dek"
KEY_BYTES = bytes(range(32))  # 00 01 .. 1f
SECRET_BYTES = b"correct horse battery staple"
IV = bytes(range(0xA0, 0xB0))  # 16 bytes a0 .. af
PLAINTEXT = b"OpenKCM fixture plaintext, 32 B"
CIPHERTEXT = bytes(range(0x40, 0x60))
MAC_DATA = b"message to authenticate"
COMPROMISE_DATE = 1700000000  # 2023-11-14T22:13:20Z
ACTIVATION_DATE = 1704067200  # 2024-01-01T00:00:00Z
REVOCATION_MESSAGE = "key material leaked"
USERNAME = "tenant-a"
PASSWORD = "s3cret-password"


class Captured(Exception):
    """Raised by the recording transport once the request bytes are in."""


class RecordingProtocol(object):
    """Stands in for kmip.services.kmip_protocol.KMIPProtocol."""

    def __init__(self):
        self.sent = []

    def write(self, data):
        self.sent.append(bytes(data))
        raise Captured()

    def read(self):  # pragma: no cover - write always aborts first
        raise AssertionError("recording transport never reads")


def make_client(version, username=None, password=None):
    """A ProxyKmipClient that is 'open' onto a RecordingProtocol."""
    client = pie_client.ProxyKmipClient(
        hostname="127.0.0.1",
        port=5696,
        username=username,
        password=password,
        config_file=os.devnull,  # ignore any /etc/pykmip/pykmip.conf
        kmip_version=version,
    )
    client.proxy.protocol = RecordingProtocol()
    client._is_open = True
    return client


def op_name(op):
    """Operation enum -> KMIP spec name, e.g. GET_ATTRIBUTE_LIST -> GetAttributeList."""
    return "".join(w.capitalize() for w in op.name.split("_"))


def mask(*bits):
    v = 0
    for b in bits:
        v |= b.value
    return v


AF = AttributeFactory()
AVF = AF.value_factory
CUM = enums.CryptographicUsageMask

# --------------------------------------------------------------------------
# Cases.  Each takes (client, kmip_version_enum) and returns
# (operations, expect).  The request is captured when the client writes it.
# --------------------------------------------------------------------------


def case_create(c, v):
    c.create(
        enums.CryptographicAlgorithm.AES,
        256,
        name=KEY_NAME,
        cryptographic_usage_mask=[CUM.ENCRYPT, CUM.DECRYPT],
    )


def expect_create(v):
    return {
        "object_type": enums.ObjectType.SYMMETRIC_KEY.value,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES.value,
        "cryptographic_length": 256,
        "cryptographic_usage_mask": mask(CUM.ENCRYPT, CUM.DECRYPT),
        "name": KEY_NAME,
        "name_type": enums.NameType.UNINTERPRETED_TEXT_STRING.value,
    }


def case_create_hmac_key(c, v):
    # Default usage mask (Encrypt|Decrypt) is always added by the Pie client;
    # MAC Generate/Verify are added on top.
    c.create(
        enums.CryptographicAlgorithm.HMAC_SHA256,
        256,
        name="tenant-a/hmac",
        cryptographic_usage_mask=[CUM.MAC_GENERATE, CUM.MAC_VERIFY],
    )


def expect_create_hmac_key(v):
    return {
        "object_type": enums.ObjectType.SYMMETRIC_KEY.value,
        "cryptographic_algorithm":
            enums.CryptographicAlgorithm.HMAC_SHA256.value,
        "cryptographic_length": 256,
        "cryptographic_usage_mask": mask(
            CUM.ENCRYPT, CUM.DECRYPT, CUM.MAC_GENERATE, CUM.MAC_VERIFY),
        "name": "tenant-a/hmac",
    }


def case_create_with_credential(c, v):
    case_create(c, v)


def expect_create_with_credential(v):
    e = expect_create(v)
    e.update({
        "credential_type":
            enums.CredentialType.USERNAME_AND_PASSWORD.value,
        "username": USERNAME,
        "password": PASSWORD,
    })
    return e


def case_create_key_pair(c, v):
    c.create_key_pair(
        enums.CryptographicAlgorithm.RSA,
        2048,
        public_name="tenant-a/rsa-pub",
        public_usage_mask=[CUM.VERIFY],
        private_name="tenant-a/rsa-priv",
        private_usage_mask=[CUM.SIGN],
    )


def expect_create_key_pair(v):
    return {
        "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA.value,
        "cryptographic_length": 2048,
        "public_name": "tenant-a/rsa-pub",
        "public_usage_mask": mask(CUM.VERIFY),
        "private_name": "tenant-a/rsa-priv",
        "private_usage_mask": mask(CUM.SIGN),
    }


def case_register_symmetric_key(c, v):
    key = pobjects.SymmetricKey(
        enums.CryptographicAlgorithm.AES,
        256,
        KEY_BYTES,
        masks=[CUM.ENCRYPT, CUM.DECRYPT],
        name=KEY_NAME,
    )
    c.register(key)


def expect_register_symmetric_key(v):
    return {
        "object_type": enums.ObjectType.SYMMETRIC_KEY.value,
        "key_format_type": enums.KeyFormatType.RAW.value,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES.value,
        "cryptographic_length": 256,
        "cryptographic_usage_mask": mask(CUM.ENCRYPT, CUM.DECRYPT),
        "name": KEY_NAME,
        "key_material_hex": KEY_BYTES.hex(),
    }


def case_register_secret_data(c, v):
    secret = pobjects.SecretData(
        SECRET_BYTES,
        enums.SecretDataType.PASSWORD,
        masks=[CUM.DERIVE_KEY],
        name="tenant-a/db-password",
    )
    c.register(secret)


def expect_register_secret_data(v):
    return {
        "object_type": enums.ObjectType.SECRET_DATA.value,
        "secret_data_type": enums.SecretDataType.PASSWORD.value,
        "key_format_type": enums.KeyFormatType.OPAQUE.value,
        "cryptographic_usage_mask": mask(CUM.DERIVE_KEY),
        "name": "tenant-a/db-password",
        "key_material_hex": SECRET_BYTES.hex(),
    }


def case_get(c, v):
    c.get(UID)


def expect_get(v):
    return {"unique_identifier": UID}


GET_ATTRIBUTE_NAMES = ["State", "Cryptographic Algorithm", "Name"]


def case_get_attributes(c, v):
    c.get_attributes(UID, list(GET_ATTRIBUTE_NAMES))


def expect_get_attributes(v):
    e = {"unique_identifier": UID, "attribute_names": GET_ATTRIBUTE_NAMES}
    if v >= enums.KMIPVersion.KMIP_2_0:
        # KMIP 2.0: each name becomes an Attribute Reference encoded as an
        # Enumeration whose value is the attribute's tag.
        e["attribute_reference_tags"] = [
            enums.convert_attribute_name_to_tag(n).value
            for n in GET_ATTRIBUTE_NAMES
        ]
    return e


def case_get_attribute_list(c, v):
    c.get_attribute_list(UID)


def expect_get_attribute_list(v):
    return {"unique_identifier": UID}


def case_activate(c, v):
    c.activate(UID)


def expect_activate(v):
    return {"unique_identifier": UID}


def case_revoke_key_compromise(c, v):
    c.revoke(
        enums.RevocationReasonCode.KEY_COMPROMISE,
        UID,
        revocation_message=REVOCATION_MESSAGE,
        compromise_occurrence_date=COMPROMISE_DATE,
    )


def expect_revoke_key_compromise(v):
    return {
        "unique_identifier": UID,
        "revocation_reason_code":
            enums.RevocationReasonCode.KEY_COMPROMISE.value,
        "revocation_message": REVOCATION_MESSAGE,
        "compromise_occurrence_date": COMPROMISE_DATE,
    }


def case_revoke_cessation(c, v):
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, UID)


def expect_revoke_cessation(v):
    return {
        "unique_identifier": UID,
        "revocation_reason_code":
            enums.RevocationReasonCode.CESSATION_OF_OPERATION.value,
    }


def case_destroy(c, v):
    c.destroy(UID)


def expect_destroy(v):
    return {"unique_identifier": UID}


def case_locate_by_name(c, v):
    c.locate(
        maximum_items=10,
        attributes=[AF.create_attribute(enums.AttributeType.NAME, KEY_NAME)],
    )


def expect_locate_by_name(v):
    return {"maximum_items": 10, "name": KEY_NAME}


def case_locate_by_algorithm_paged(c, v):
    c.locate(
        maximum_items=5,
        offset_items=5,
        attributes=[
            AF.create_attribute(
                enums.AttributeType.OBJECT_TYPE,
                enums.ObjectType.SYMMETRIC_KEY,
            ),
            AF.create_attribute(
                enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                enums.CryptographicAlgorithm.AES,
            ),
        ],
    )


def expect_locate_by_algorithm_paged(v):
    e = {
        "maximum_items": 5,
        "offset_items": 5,
        "object_type": enums.ObjectType.SYMMETRIC_KEY.value,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES.value,
    }
    if v < enums.KMIPVersion.KMIP_1_3:
        e["note"] = ("Offset Items is a KMIP 1.3 field, but PyKMIP 0.11 "
                     "sends it in 1.2 requests too")
    return e


CBC_PARAMS = {
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
}


def cbc_expect():
    return {
        "block_cipher_mode": enums.BlockCipherMode.CBC.value,
        "padding_method": enums.PaddingMethod.PKCS5.value,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES.value,
    }


def case_encrypt(c, v):
    c.encrypt(PLAINTEXT, uid=UID, cryptographic_parameters=CBC_PARAMS,
              iv_counter_nonce=IV)


def expect_encrypt(v):
    e = {"unique_identifier": UID, "data_hex": PLAINTEXT.hex(),
         "iv_counter_nonce_hex": IV.hex()}
    e.update(cbc_expect())
    return e


def case_encrypt_gcm_random_iv(c, v):
    c.encrypt(
        PLAINTEXT,
        uid=UID,
        cryptographic_parameters={
            "block_cipher_mode": enums.BlockCipherMode.GCM,
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "random_iv": True,
            "iv_length": 96,
            "tag_length": 16,
        },
    )


def expect_encrypt_gcm_random_iv(v):
    return {
        "unique_identifier": UID,
        "data_hex": PLAINTEXT.hex(),
        "block_cipher_mode": enums.BlockCipherMode.GCM.value,
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES.value,
        "random_iv": True,
        "iv_length": 96,
        "tag_length": 16,
    }


def case_decrypt(c, v):
    c.decrypt(CIPHERTEXT, uid=UID, cryptographic_parameters=CBC_PARAMS,
              iv_counter_nonce=IV)


def expect_decrypt(v):
    e = {"unique_identifier": UID, "data_hex": CIPHERTEXT.hex(),
         "iv_counter_nonce_hex": IV.hex()}
    e.update(cbc_expect())
    return e


def case_mac(c, v):
    c.mac(MAC_DATA, uid=UID2,
          algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)


def expect_mac(v):
    return {
        "unique_identifier": UID2,
        "cryptographic_algorithm":
            enums.CryptographicAlgorithm.HMAC_SHA256.value,
        "data_hex": MAC_DATA.hex(),
    }


def case_sign(c, v):
    c.sign(MAC_DATA, uid=PRIV_UID, cryptographic_parameters={
        "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
        "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
        "padding_method": enums.PaddingMethod.PSS,
    })


def expect_sign(v):
    return {
        "unique_identifier": PRIV_UID,
        "data_hex": MAC_DATA.hex(),
        "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA.value,
        "hashing_algorithm": enums.HashingAlgorithm.SHA_256.value,
        "padding_method": enums.PaddingMethod.PSS.value,
    }


def case_rekey(c, v):
    c.rekey(uid=UID, offset=3600, activation_date=ACTIVATION_DATE)


def expect_rekey(v):
    e = {"unique_identifier": UID, "offset": 3600,
         "activation_date": ACTIVATION_DATE}
    if v >= enums.KMIPVersion.KMIP_2_0:
        e["note"] = ("PyKMIP 0.11 still sends a 1.x Template-Attribute in "
                     "KMIP 2.0 Rekey requests")
    return e


def case_discover_versions(c, v):
    c.proxy.discover_versions(protocol_versions=[
        contents.ProtocolVersion(2, 0),
        contents.ProtocolVersion(1, 4),
        contents.ProtocolVersion(1, 2),
    ])


def expect_discover_versions(v):
    return {"protocol_versions": [[2, 0], [1, 4], [1, 2]]}


def case_discover_versions_empty(c, v):
    c.proxy.discover_versions()


def expect_discover_versions_empty(v):
    return {"protocol_versions": []}


QUERY_FUNCTIONS = [
    enums.QueryFunction.QUERY_OPERATIONS,
    enums.QueryFunction.QUERY_OBJECTS,
    enums.QueryFunction.QUERY_SERVER_INFORMATION,
]


def case_query(c, v):
    c.proxy.query(query_functions=list(QUERY_FUNCTIONS))


def expect_query(v):
    return {"query_functions": [q.value for q in QUERY_FUNCTIONS]}


def case_batch_discover_query(c, v):
    # PyKMIP has no public batch API; KMIPProxy(batch=True) collects items in
    # proxy.batch_items and _build_request_message/_send_message put them on
    # the wire, as its own integration code does.
    p = c.proxy
    p.discover_versions(batch=True, protocol_versions=[
        contents.ProtocolVersion(1, 4)])
    p.query(batch=True, query_functions=[
        enums.QueryFunction.QUERY_OPERATIONS])
    p._send_message(p._build_request_message(None, p.batch_items))


def expect_batch_discover_query(v):
    return {
        "protocol_versions": [[1, 4]],
        "query_functions": [enums.QueryFunction.QUERY_OPERATIONS.value],
    }


def case_set_attribute(c, v):
    c.set_attribute(unique_identifier=UID, attribute_name="Sensitive",
                    attribute_value=True)


def expect_set_attribute(v):
    return {"unique_identifier": UID, "attribute_name": "Sensitive",
            "attribute_value": True}


def case_modify_attribute(c, v):
    if v < enums.KMIPVersion.KMIP_2_0:
        c.modify_attribute(
            unique_identifier=UID,
            attribute=AF.create_attribute(
                enums.AttributeType.NAME, "tenant-a/renamed", index=0),
        )
    else:
        c.modify_attribute(
            unique_identifier=UID,
            current_attribute=cobjects.CurrentAttribute(
                attribute=AVF.create_attribute_value(
                    enums.AttributeType.NAME, KEY_NAME)),
            new_attribute=cobjects.NewAttribute(
                attribute=AVF.create_attribute_value(
                    enums.AttributeType.NAME, "tenant-a/renamed")),
        )


def expect_modify_attribute(v):
    e = {"unique_identifier": UID, "attribute_name": "Name",
         "new_name": "tenant-a/renamed"}
    if v < enums.KMIPVersion.KMIP_2_0:
        e["attribute_index"] = 0
    else:
        e["current_name"] = KEY_NAME
    return e


def case_delete_attribute(c, v):
    if v < enums.KMIPVersion.KMIP_2_0:
        c.delete_attribute(unique_identifier=UID, attribute_name="Name",
                           attribute_index=0)
    else:
        c.delete_attribute(
            unique_identifier=UID,
            attribute_reference=cobjects.AttributeReference(
                vendor_identification="", attribute_name="Name"),
        )


def expect_delete_attribute(v):
    e = {"unique_identifier": UID, "attribute_name": "Name"}
    if v < enums.KMIPVersion.KMIP_2_0:
        e["attribute_index"] = 0
    else:
        e["note"] = ("PyKMIP 0.11 names a standard attribute in a 2.0 Attribute "
                     "Reference structure with an empty Vendor Identification; "
                     "servers read it as the standard attribute")
    return e


# (fixture name, case, expect, client kwargs)
CASES = [
    ("discover_versions", case_discover_versions, expect_discover_versions,
     {}),
    ("discover_versions_empty", case_discover_versions_empty,
     expect_discover_versions_empty, {}),
    ("query", case_query, expect_query, {}),
    ("create", case_create, expect_create, {}),
    ("create_hmac_key", case_create_hmac_key, expect_create_hmac_key, {}),
    ("create_with_credential", case_create_with_credential,
     expect_create_with_credential,
     {"username": USERNAME, "password": PASSWORD}),
    ("create_key_pair", case_create_key_pair, expect_create_key_pair, {}),
    ("register_symmetric_key", case_register_symmetric_key,
     expect_register_symmetric_key, {}),
    ("register_secret_data", case_register_secret_data,
     expect_register_secret_data, {}),
    ("get", case_get, expect_get, {}),
    ("get_attributes", case_get_attributes, expect_get_attributes, {}),
    ("get_attribute_list", case_get_attribute_list, expect_get_attribute_list,
     {}),
    ("activate", case_activate, expect_activate, {}),
    ("revoke_key_compromise", case_revoke_key_compromise,
     expect_revoke_key_compromise, {}),
    ("revoke_cessation", case_revoke_cessation, expect_revoke_cessation, {}),
    ("destroy", case_destroy, expect_destroy, {}),
    ("locate_by_name", case_locate_by_name, expect_locate_by_name, {}),
    ("locate_by_algorithm_paged", case_locate_by_algorithm_paged,
     expect_locate_by_algorithm_paged, {}),
    ("encrypt", case_encrypt, expect_encrypt, {}),
    ("encrypt_gcm_random_iv", case_encrypt_gcm_random_iv,
     expect_encrypt_gcm_random_iv, {}),
    ("decrypt", case_decrypt, expect_decrypt, {}),
    ("mac", case_mac, expect_mac, {}),
    ("sign", case_sign, expect_sign, {}),
    ("rekey", case_rekey, expect_rekey, {}),
    ("set_attribute", case_set_attribute, expect_set_attribute, {}),
    ("modify_attribute", case_modify_attribute, expect_modify_attribute, {}),
    ("delete_attribute", case_delete_attribute, expect_delete_attribute, {}),
    ("batch_discover_query", case_batch_discover_query,
     expect_batch_discover_query, {}),
]

# Operations PyKMIP 0.11 has no client support (no payload class) for at all.
NOT_IN_PYKMIP = [
    "AddAttribute",
    "RNGRetrieve",
    "RNGSeed",
    "Hash",
    "Import",
    "Export",
]


def header_facts(buf):
    """Read back header facts with PyKMIP's own decoder (sanity check)."""
    from kmip.core.messages import messages
    from kmip.core.utils import BytearrayStream
    msg = messages.RequestMessage()
    # Decode with the newest version: the header layout does not depend on it.
    msg.read(BytearrayStream(buf), enums.KMIPVersion.KMIP_2_0)
    pv = msg.request_header.protocol_version
    ops = [op_name(b.operation.value) for b in msg.batch_items]
    return (pv.major, pv.minor), msg.request_header.batch_count.value, ops


def generate():
    fixtures = []
    refused = []
    for vname, venum in VERSIONS:
        for name, case, expect, kwargs in CASES:
            client = make_client(venum, **kwargs)
            proto = client.proxy.protocol
            try:
                case(client, venum)
            except Captured:
                pass
            except Exception as e:  # PyKMIP refused to build/encode it
                refused.append({
                    "name": name,
                    "kmip_version": vname,
                    "error": "{}: {}".format(type(e).__name__, e),
                })
                continue
            finally:
                client.proxy.protocol = None
            if len(proto.sent) != 1:
                raise RuntimeError("{} {}: {} writes".format(
                    name, vname, len(proto.sent)))
            buf = proto.sent[0]
            (major, minor), batch_count, ops = header_facts(buf)
            if "{}.{}".format(major, minor) != vname:
                raise RuntimeError("{} {}: header says {}.{}".format(
                    name, vname, major, minor))
            facts = expect(venum)
            fixture = {
                "name": name,
                "kmip_version": vname,
                "hex": buf.hex(),
                "operation": ops[0],
                "operations": ops,
                "batch_count": batch_count,
                "expect": facts,
            }
            if "note" in facts:
                fixture["note"] = facts.pop("note")
            fixtures.append(fixture)
    for op in NOT_IN_PYKMIP:
        refused.append({"name": op, "kmip_version": "*",
                        "error": "not implemented by PyKMIP 0.11"})
    return fixtures, refused


# --------------------------------------------------------------------------
# Responses: the same client requests, answered by PyKMIP 0.11's own server
# engine (kmip.services.server.engine.KmipEngine, in-memory SQLite), encoded
# with PyKMIP's encoder.  Time and key generation are patched to be fixed.
# --------------------------------------------------------------------------

SERVER_TIME = 1735689600  # 2025-01-01T00:00:00Z, the response Time Stamp
SERVER_IDENTITY = ("tenant-a", None)  # what a TLS session would pass in


def server_key_bytes(n):
    """Stand-in for os.urandom inside PyKMIP's crypto engine: 10 11 12 .."""
    return bytes((0x10 + i) & 0xFF for i in range(n))


class _FixedTime(object):
    def __getattr__(self, name):
        import time
        return getattr(time, name)

    @staticmethod
    def time():
        return SERVER_TIME


class _FixedOs(object):
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def urandom(n):
        return server_key_bytes(n)


def make_server():
    import copy
    from kmip.core import policy
    from kmip.services.server import engine as sengine
    from kmip.services.server.crypto import engine as cengine
    sengine.time = _FixedTime()
    cengine.os = _FixedOs()
    return sengine.KmipEngine(
        policies=copy.deepcopy(policy.policies),
        database_path=":memory:",
    )


def aes_cbc_pkcs7(key, iv, data):
    from cryptography.hazmat.backends import default_backend
    from cryptography.hazmat.primitives import ciphers, padding
    p = padding.PKCS7(128).padder()
    padded = p.update(data) + p.finalize()
    enc = ciphers.Cipher(ciphers.algorithms.AES(key), ciphers.modes.CBC(iv),
                         backend=default_backend()).encryptor()
    return enc.update(padded) + enc.finalize()


def generate_responses():
    from kmip.core.messages import messages
    from kmip.core.utils import BytearrayStream

    server_uid = "1"  # first object in a fresh PyKMIP server database
    key = server_key_bytes(32)
    ok = enums.ResultStatus.SUCCESS.value
    failed = enums.ResultStatus.OPERATION_FAILED.value
    conversation = [
        ("discover_versions", lambda c, v: case_discover_versions(c, v),
         lambda r: {"protocol_versions": [[2, 0], [1, 4], [1, 2]]}),
        ("query", lambda c, v: case_query(c, v),
         lambda r: {"operations": [
             o.value for o in r.batch_items[0].response_payload.operations]}),
        ("create", lambda c, v: case_create(c, v),
         lambda r: {"object_type": enums.ObjectType.SYMMETRIC_KEY.value,
                    "unique_identifier": server_uid}),
        ("get", lambda c, v: c.get(server_uid),
         lambda r: {"object_type": enums.ObjectType.SYMMETRIC_KEY.value,
                    "unique_identifier": server_uid,
                    "key_format_type": enums.KeyFormatType.RAW.value,
                    "cryptographic_algorithm":
                        enums.CryptographicAlgorithm.AES.value,
                    "cryptographic_length": 256,
                    "key_material_hex": key.hex()}),
        ("activate", lambda c, v: c.activate(server_uid),
         lambda r: {"unique_identifier": server_uid}),
        ("encrypt", lambda c, v: c.encrypt(
            PLAINTEXT, uid=server_uid, cryptographic_parameters=CBC_PARAMS,
            iv_counter_nonce=IV),
         lambda r: {"unique_identifier": server_uid,
                    "data_hex": aes_cbc_pkcs7(key, IV, PLAINTEXT).hex()}),
        ("get_not_found", lambda c, v: c.get("999"),
         lambda r: {"result_reason": enums.ResultReason.ITEM_NOT_FOUND.value,
                    "result_message": "Could not locate object: 999"}),
    ]

    out = []
    for vname, venum in VERSIONS:
        server = make_server()
        for name, case, expect in conversation:
            client = make_client(venum)
            proto = client.proxy.protocol
            try:
                case(client, venum)
            except Captured:
                pass
            finally:
                client.proxy.protocol = None
            req_bytes = proto.sent[0]
            request = messages.RequestMessage()
            request.read(BytearrayStream(req_bytes), venum)
            response, _, pv = server.process_request(request, SERVER_IDENTITY)
            stream = BytearrayStream()
            response.write(stream, venum)
            buf = bytes(stream.buffer)
            # Read it back the way the client does.
            decoded = messages.ResponseMessage()
            decoded.read(BytearrayStream(buf), venum)
            hdr = decoded.response_header
            item = decoded.batch_items[0]
            status = item.result_status.value.value
            want = failed if name.endswith("not_found") else ok
            if status != want or "{}.{}".format(
                    hdr.protocol_version.major,
                    hdr.protocol_version.minor) != vname:
                raise RuntimeError("{} {}: unexpected response {}".format(
                    name, vname, decoded))
            facts = {"time_stamp": SERVER_TIME, "result_status": status}
            facts.update(expect(decoded))
            payload = item.response_payload
            if "data_hex" in facts and payload.data.hex() != facts["data_hex"]:
                raise RuntimeError("encrypt: server ciphertext != AES-CBC")
            if "key_material_hex" in facts:
                km = payload.secret.key_block.key_value.key_material.value
                if km.hex() != facts["key_material_hex"]:
                    raise RuntimeError("get: unexpected key material")
            out.append({
                "name": name,
                "kmip_version": vname,
                "hex": buf.hex(),
                "request_hex": req_bytes.hex(),
                "operation": op_name(item.operation.value),
                "batch_count": hdr.batch_count.value,
                "expect": facts,
            })
    return out


_TTLV_TYPES = {1: "Structure", 2: "Integer", 3: "LongInteger",
               4: "BigInteger", 5: "Enumeration", 6: "Boolean",
               7: "TextString", 8: "ByteString", 9: "DateTime",
               10: "Interval"}


def ttlv_tree(buf, depth=0):
    """Human-readable TTLV dump (tag names from PyKMIP), for --dump."""
    lines, i = [], 0
    while i + 8 <= len(buf):
        tag = int.from_bytes(buf[i:i + 3], "big")
        typ, length = buf[i + 3], int.from_bytes(buf[i + 4:i + 8], "big")
        val = buf[i + 8:i + 8 + length]
        try:
            name = enums.Tags(tag).name
        except ValueError:
            name = "0x{:06x}".format(tag)
        head = "  " * depth + "{} {}".format(name, _TTLV_TYPES.get(typ, typ))
        if typ == 1:
            lines.append(head)
            lines.extend(ttlv_tree(val, depth + 1))
        else:
            if typ in (2, 3, 5, 9):
                shown = int.from_bytes(val, "big", signed=(typ != 5))
            elif typ == 6:
                shown = bool(int.from_bytes(val, "big"))
            elif typ == 7:
                shown = repr(val.decode("utf-8"))
            elif typ == 10:
                shown = int.from_bytes(val, "big")
            else:
                shown = val.hex()
            lines.append("{} {}".format(head, shown))
        i += 8 + length + (-length % 8)
    return lines


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"


def main(argv):
    if kmip.__version__ != PYKMIP_VERSION:
        sys.stderr.write("expected PyKMIP {}, found {}\n".format(
            PYKMIP_VERSION, kmip.__version__))
        return 2
    fixtures, refused = generate()
    responses = generate_responses()  # patches PyKMIP's server modules
    if "--dump" in argv:
        # --dump NAME [VERSION]: print the TTLV tree of matching fixtures.
        rest = argv[argv.index("--dump") + 1:]
        name, version = (rest + [None, None])[:2]
        for kind, items in (("request", fixtures), ("response", responses)):
            for f in items:
                if f["name"] == name and version in (None, f["kmip_version"]):
                    print("== {} {} {}".format(kind, name, f["kmip_version"]))
                    print("\n".join(ttlv_tree(bytes.fromhex(f["hex"]))))
        return 0  # patches PyKMIP's server modules
    files = {
        "requests": (REQUESTS_JSON, dump(fixtures)),
        "responses": (RESPONSES_JSON, dump(responses)),
        "refused": (REFUSED_JSON, dump(refused)),
    }
    for arg in argv:
        if arg == "--stdout" or arg.startswith("--stdout="):
            which = arg.partition("=")[2] or "requests"
            if which not in files:
                sys.stderr.write("unknown output {!r}\n".format(which))
                return 2
            sys.stdout.write(files[which][1])
            return 0
    if "--check" in argv:
        ok = True
        for path, text in files.values():
            with open(path) as f:
                if f.read() != text:
                    sys.stderr.write("{} is stale\n".format(path))
                    ok = False
        return 0 if ok else 1
    for path, text in files.values():
        with open(path, "w") as f:
            f.write(text)
    sys.stderr.write(
        "wrote {} requests, {} responses, {} refused/unsupported to {}\n"
        .format(len(fixtures), len(responses), len(refused), HERE))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
