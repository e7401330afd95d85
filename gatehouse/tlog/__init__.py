"""The transparency log of decisions and human actions (RFC 9162 Merkle tree, C2SP checkpoints).

``verify`` is self-contained (standard library + ``cryptography``, no Django), so that a data
subject or an auditor can check a receipt with that one file; the rest of the package is the
server side: leaves, the sequencer, stored nodes, checkpoints and witnesses.
"""
