#!/usr/bin/python3
"""An independent verifier of bootgate's signed attestations (no bootgate code).

Key parsing is python3-cryptography's, signature checking securesystemslib's
(SSlibKey.verify_signature, which uses PyNaCl), and cryptography's Ed25519 checks
the same signature a second time. Only DSSE's PAE is written here: securesystemslib
0.26, Debian 12's, has no DSSE envelope class yet, and the encoding is one line of
the DSSE specification.

  verify RUN_DIR PUBKEY   the envelope's signature, key id and every subject digest
  resign RUN_DIR PRIVKEY  drops the subject run.json and re-signs with PRIVKEY
                          (a signer who vouches for files that are not the run's)
Exit 0 and "OK ..." when it verifies; 1 and the reason when not; 3 when a package is
missing.
"""
import base64
import hashlib
import json
import os
import sys

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from securesystemslib import exceptions as sslib_exceptions
    from securesystemslib.signer import Signature, SSlibKey
    import nacl  # noqa: F401  (securesystemslib verifies Ed25519 through it)
except ImportError as e:
    print(
        f"missing Python package ({e}): apt-get install python3-securesystemslib "
        "python3-nacl python3-cryptography (or run tools/host-setup)",
        file=sys.stderr,
    )
    sys.exit(3)

ATTESTATION = "attestation.intoto.jsonl"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def fail(why: str) -> None:
    print(f"REJECTED: {why}")
    sys.exit(1)


def verify(run_dir: str, pubkey_path: str) -> None:
    with open(pubkey_path, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    if not isinstance(public, ed25519.Ed25519PublicKey):
        fail("not an Ed25519 public key")
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keyid = hashlib.sha256(der).hexdigest()

    with open(os.path.join(run_dir, ATTESTATION), "rb") as f:
        envelope = json.loads(f.read())
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        fail(f"payloadType {envelope.get('payloadType')!r}")
    body = base64.b64decode(envelope["payload"], validate=True)
    message = pae(envelope["payloadType"], body)
    key = SSlibKey(keyid, "ed25519", "ed25519", {"public": raw.hex()})
    mine = [s for s in envelope["signatures"] if s.get("keyid") == keyid]
    if not mine:
        fail(f"no signature with key id {keyid}")
    for s in mine:
        sig = base64.b64decode(s["sig"], validate=True)
        try:
            key.verify_signature(Signature(keyid, sig.hex()), message)
        except (sslib_exceptions.UnverifiedSignatureError, sslib_exceptions.VerificationError) as e:
            fail(f"securesystemslib: {e}")
        try:
            public.verify(sig, message)
        except InvalidSignature:
            fail("cryptography: the signature does not verify")

    statement = json.loads(body)
    if statement.get("_type") != "https://in-toto.io/Statement/v1":
        fail(f"_type {statement.get('_type')!r}")
    for subject in statement["subject"]:
        with open(os.path.join(run_dir, subject["name"]), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != subject["digest"]["sha256"]:
            fail(f"subject {subject['name']}: sha256 differs")
    print(
        f"OK signature by key id {keyid}; {len(statement['subject'])} subjects match; "
        f"predicateType {statement['predicateType']}"
    )


def resign(run_dir: str, privkey_path: str) -> None:
    with open(privkey_path, "rb") as f:
        private = serialization.load_pem_private_key(f.read(), password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keyid = hashlib.sha256(der).hexdigest()
    path = os.path.join(run_dir, ATTESTATION)
    with open(path, "rb") as f:
        envelope = json.loads(f.read())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"] = [s for s in statement["subject"] if s["name"] != "run.json"]
    body = json.dumps(statement, separators=(",", ":")).encode()
    sig = private.sign(pae(PAYLOAD_TYPE, body))
    envelope = {
        "payload": base64.b64encode(body).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}],
    }
    with open(path, "w") as f:
        f.write(json.dumps(envelope) + "\n")
    print(f"re-signed without run.json by key id {keyid}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("verify", "resign"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    (verify if sys.argv[1] == "verify" else resign)(sys.argv[2], sys.argv[3])
