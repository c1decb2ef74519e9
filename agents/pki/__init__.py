"""Cryptography for the agent without keeping ``cryptography`` in its long-lived process: a strict DER
reader for certificates and keys (:mod:`agents.pki.der`), AES-GCM and HKDF over OpenSSL's libcrypto
(:mod:`agents.pki.aead`), and key creation/signing in a short-lived subprocess (:mod:`agents.pki.tool`,
driven by :mod:`agents.pki.client`; the code it runs is :mod:`agents.pki.signing`). Every agent process
would otherwise carry ~11 MB of ``cryptography``.
"""
