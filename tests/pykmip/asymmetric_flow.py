#!/usr/bin/env python3
"""RSA key pairs, signatures and RSA-OAEP with the real PyKMIP 0.11 client; prints one JSON object.

usage: asymmetric_flow.py HOST PORT PKI_DIR VERSION(1.2|1.4|2.0)

As tenant-a: creates two named RSA-2048 key pairs (Create Key Pair), one for signatures
(Sign on the private key, Verify on the public key) and one for RSA-OAEP (Decrypt / Encrypt),
activates the four keys, finds each pair by name (Locate), then:
  - signs with PKCS#1 v1.5 + SHA-256 and with PSS + SHA-256, asks the server to verify each
    signature (valid, and over a tampered message), and verifies each independently with the
    `cryptography` package using the public key from Get (PKCS#1 expected);
  - encrypts with RSA-OAEP (SHA-256; PyKMIP cannot name the mask generator, so MGF1 with the
    same hash, the KMIP default) with the public key and decrypts with the private key;
    `cryptography` encrypts for the server to decrypt, and decrypts the server's ciphertext
    with the private key from Get; a tampered ciphertext does not decrypt;
  - revokes and destroys the four keys; Get of a destroyed key fails.
Every step's outcome is recorded: {"ok": true, "value": ...} or
{"ok": false, "error": ..., "reason": ...}.
"""

import json
import sys
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from kmip.core import enums
from kmip.pie import objects

from attributes_flow import attribute_map
from dev_flow import name_attr, session, step

U = enums.CryptographicUsageMask
PKCS1V15 = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
    "padding_method": enums.PaddingMethod.PKCS1v15,
    "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
}
PSS = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
    "padding_method": enums.PaddingMethod.PSS,
    "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
}
OAEP = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
    "padding_method": enums.PaddingMethod.OAEP,
    "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
}
OAEP_LOCAL = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def tampered(b):
    return bytes([b[0] ^ 1]) + b[1:]


def local_verify(public_key, signature, message, pad):
    """True if `cryptography` accepts the signature, False if it refuses it."""
    try:
        public_key.verify(signature, message, pad, hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def pss_salt(public_key, signature, message):
    """Which PSS salt length the signature was made with: "digest" (32), "max" or None."""
    for name, salt in (("digest", padding.PSS.DIGEST_LENGTH), ("max", padding.PSS.MAX_LENGTH)):
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
        if local_verify(public_key, signature, message, pad):
            return name
    return None


def key_info(obj):
    """What Get returned: object type, format and length, as names and numbers."""
    return {
        "object_type": obj.object_type.name,
        "key_format_type": obj.key_format_type.name,
        "cryptographic_length": obj.cryptographic_length,
        "bytes": len(obj.value),
    }


def main():
    host, port, pki, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    tag = "%s-%s" % (version, uuid.uuid4().hex[:8])
    message = b"openkcm: signed by an RSA-2048 key over KMIP " + version.encode()
    plaintext = b"openkcm: RSA-OAEP over KMIP " + version.encode()
    st = {}

    def flow(c):
        out = {}

        def create(kind, public_usage, private_usage):
            pub_uid, priv_uid = c.create_key_pair(
                enums.CryptographicAlgorithm.RSA, 2048,
                public_name="%s-pub-%s" % (kind, tag), public_usage_mask=public_usage,
                private_name="%s-priv-%s" % (kind, tag), private_usage_mask=private_usage)
            st[kind] = (pub_uid, priv_uid)
            return [pub_uid, priv_uid]

        out["create_sign_pair"] = step(lambda: create("sign", [U.VERIFY], [U.SIGN]))
        out["create_oaep_pair"] = step(lambda: create("oaep", [U.ENCRYPT], [U.DECRYPT]))
        if "sign" not in st or "oaep" not in st:
            return out
        keys = list(st["sign"]) + list(st["oaep"])
        out["uids"] = {"ok": True, "value": keys}
        out["activate"] = step(lambda: [c.activate(uid) for uid in keys] and True)
        out["locate"] = step(lambda: {
            "%s-%s" % (kind, part): c.locate(attributes=[name_attr("%s-%s-%s" % (kind, part, tag))])
            for kind in ("sign", "oaep") for part in ("pub", "priv")})
        sign_pub, sign_priv = st["sign"]
        oaep_pub, oaep_priv = st["oaep"]

        # An X.509 certificate (made here by `cryptography`): registered, read back whole.
        def register_certificate():
            import datetime
            from cryptography import x509
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmip-client-%s" % tag)])
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                    .sign(key, hashes.SHA256()))
            der = cert.public_bytes(serialization.Encoding.DER)
            uid = c.register(objects.X509Certificate(der))
            st["certificate"] = (uid, der)
            return uid

        out["register_certificate"] = step(register_certificate)
        if "certificate" in st:
            cert_uid, cert_der = st["certificate"]
            out["get_certificate"] = step(lambda: c.get(cert_uid).value == cert_der)
            out["get_attributes_all_certificate"] = step(
                lambda: attribute_map(c.get_attributes(cert_uid)[1]))

        # Get Attributes naming none: the server chooses; PyKMIP must parse every one.
        out["get_attributes_all_private"] = step(
            lambda: attribute_map(c.get_attributes(sign_priv)[1]))
        out["get_attributes_all_public"] = step(
            lambda: attribute_map(c.get_attributes(sign_pub)[1]))

        # Signatures, checked by the server.
        def sign(name, params):
            signature = c.sign(message, uid=sign_priv, cryptographic_parameters=params)
            st[name] = signature
            return len(signature)

        for name, params in (("pkcs1v15", PKCS1V15), ("pss", PSS)):
            out["sign_" + name] = step(lambda: sign(name, params))
            out["verify_" + name] = step(lambda: c.signature_verify(
                message, st[name], uid=sign_pub, cryptographic_parameters=params).name)
            out["verify_" + name + "_tampered"] = step(lambda: c.signature_verify(
                tampered(message), st[name], uid=sign_pub, cryptographic_parameters=params).name)

        # The public key from Get, and the signatures checked by `cryptography`.
        def get_public(uid, kind):
            obj = c.get(uid)
            st[kind + "_public"] = serialization.load_der_public_key(obj.value)
            info = key_info(obj)
            info["key_size"] = st[kind + "_public"].key_size
            return info

        out["get_sign_public"] = step(lambda: get_public(sign_pub, "sign"))
        if "sign_public" in st:
            pk = st["sign_public"]
            out["local_verify_pkcs1v15"] = step(lambda: local_verify(
                pk, st["pkcs1v15"], message, padding.PKCS1v15()))
            out["local_verify_pkcs1v15_tampered"] = step(lambda: local_verify(
                pk, st["pkcs1v15"], tampered(message), padding.PKCS1v15()))
            out["local_pss_salt"] = step(lambda: pss_salt(pk, st["pss"], message))
            out["local_pss_salt_tampered"] = step(lambda: pss_salt(pk, st["pss"], tampered(message)))

        # RSA-OAEP through the server.
        def encrypt():
            ciphertext, _ = c.encrypt(plaintext, uid=oaep_pub, cryptographic_parameters=OAEP)
            st["ciphertext"] = ciphertext
            return len(ciphertext)

        out["encrypt_oaep"] = step(encrypt)
        out["decrypt_oaep"] = step(lambda: c.decrypt(
            st["ciphertext"], uid=oaep_priv, cryptographic_parameters=OAEP) == plaintext)
        out["decrypt_oaep_tampered"] = step(lambda: c.decrypt(
            tampered(st["ciphertext"]), uid=oaep_priv, cryptographic_parameters=OAEP) == plaintext)

        # RSA-OAEP across: `cryptography` encrypts for the server, and decrypts the server's
        # ciphertext with the private key from Get.
        out["get_oaep_public"] = step(lambda: get_public(oaep_pub, "oaep"))
        out["server_decrypts_local"] = step(lambda: c.decrypt(
            st["oaep_public"].encrypt(plaintext, OAEP_LOCAL), uid=oaep_priv,
            cryptographic_parameters=OAEP) == plaintext)

        def get_private():
            obj = c.get(oaep_priv)
            st["oaep_private"] = serialization.load_der_private_key(obj.value, password=None)
            info = key_info(obj)
            info["matches_public"] = (st["oaep_private"].public_key().public_numbers()
                                      == st["oaep_public"].public_numbers())
            return info

        out["get_oaep_private"] = step(get_private)
        out["local_decrypts_server"] = step(lambda: st["oaep_private"].decrypt(
            st["ciphertext"], OAEP_LOCAL) == plaintext)

        # The end of the four keys.
        out["revoke"] = step(lambda: [c.revoke(
            enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid) for uid in keys] and True)
        out["sign_after_revoke"] = step(lambda: len(c.sign(
            message, uid=sign_priv, cryptographic_parameters=PKCS1V15)))
        out["destroy"] = step(lambda: [c.destroy(uid) for uid in keys] and True)
        out["get_after_destroy"] = step(lambda: len(c.get(sign_priv).value))
        return out

    result = session(host, port, pki, "tenant-a", version, flow)
    result["version"] = version
    print(json.dumps(result))


if __name__ == "__main__":
    main()
